"""werkzeug/Flask (Debian's python3-flask) for the differential path suite: an admin, a public and a catch-all
handler (the admin one on /admin and /kiosk), each answering
`DIFF-<HANDLER> flask path=<request.path>`. Serves on loopback port 0 and prints the port;
exits when its standard input closes (the test ends)."""
import sys
import threading

from flask import Flask, request
from werkzeug.serving import make_server

app = Flask(__name__)


def say(handler):
    return f"DIFF-{handler} flask path={request.path}\n", 200, {"Content-Type": "text/plain"}


ALL = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


@app.route("/admin", methods=ALL)
@app.route("/admin/<path:rest>", methods=ALL)
@app.route("/kiosk", methods=ALL)
@app.route("/kiosk/<path:rest>", methods=ALL)
def admin(rest=None):
    return say("ADMIN")


@app.route("/public", methods=ALL)
@app.route("/public/<path:rest>", methods=ALL)
def public(rest=None):
    return say("PUBLIC")


@app.route("/", methods=ALL)
@app.route("/<path:rest>", methods=ALL)
def other(rest=None):
    return say("OTHER")


server = make_server("127.0.0.1", 0, app, threaded=True)
print(f'{{"port":{server.server_port}}}', flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
sys.stdin.read()
