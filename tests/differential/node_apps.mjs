// A real Node.js framework for the differential path suite, `koa` (Koa + @koa/router) or `express` as the first
// argument, with its default (case-insensitive) router, on loopback port 0. Every handler answers
// `DIFF-<HANDLER> <framework> path=<the path its router matched>` (the admin handler serves /admin and /kiosk). Prints `{"port":N}` once listening; exits when
// its standard input closes (the test ends).
import http from 'node:http';
import Koa from 'koa';
import Router from '@koa/router';
import express from 'express';

const koa = new Koa();
const router = new Router();
const say = (ctx, handler) => {
  ctx.type = 'text/plain';
  ctx.body = `DIFF-${handler} koa path=${ctx.path}\n`;
};
router.all('/admin{/*rest}', (ctx) => say(ctx, 'ADMIN'));
router.all('/kiosk{/*rest}', (ctx) => say(ctx, 'ADMIN'));
router.all('/public{/*rest}', (ctx) => say(ctx, 'PUBLIC'));
router.all('{/*rest}', (ctx) => say(ctx, 'OTHER'));
koa.use(router.routes());

const ex = express();
const reply = (handler) => (req, res) => res.type('text/plain').send(`DIFF-${handler} express path=${req.path}\n`);
ex.all('/admin{/*rest}', reply('ADMIN'));
ex.all('/kiosk{/*rest}', reply('ADMIN'));
ex.all('/public{/*rest}', reply('PUBLIC'));
ex.all('{/*rest}', reply('OTHER'));

const listen = (handler) =>
  new Promise((resolve) => {
    const server = http.createServer(handler);
    server.listen(0, '127.0.0.1', () => resolve(server.address().port));
  });

const which = process.argv[2];
if (which !== 'koa' && which !== 'express') {
  process.stderr.write('usage: node node_apps.mjs koa|express\n');
  process.exit(2);
}
const port = await listen(which === 'koa' ? koa.callback() : ex);
process.stdout.write(`${JSON.stringify({ port })}\n`);
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
