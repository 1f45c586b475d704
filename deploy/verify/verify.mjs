#!/usr/bin/env node
// Verify idgate's identity assertion (X-Idgate-Assertion) in your application, with `jose`.
//
//     npm install jose
//
// The keys come from idgate's JWK set (`https://APP/oauth2/jwks`); createRemoteJWKSet caches them and fetches again
// when an assertion names a kid it does not know (a rotation). Check `aud` (your host, or the route's `audience`)
// and `iss` (idgate's public origin) as below; `exp` and `iat` are checked by jose.
//
// Try it:  node verify.mjs --jwks https://app.example.com/oauth2/jwks --issuer https://app.example.com \
//              --audience app.example.com "$ASSERTION"
import { createRemoteJWKSet, jwtVerify } from 'jose';

const ALGORITHMS = ['ES256', 'RS256', 'PS256']; // what idgate signs with; never "none" or HS*

/** A function that resolves to the verified claims of an assertion, or rejects. */
export function verifier(jwksUrl, issuer, audience) {
  const keys = createRemoteJWKSet(new URL(jwksUrl));
  return async (assertion) => {
    const { payload } = await jwtVerify(assertion, keys, {
      algorithms: ALGORITHMS,
      issuer,
      audience,
      requiredClaims: ['iss', 'aud', 'sub', 'exp', 'iat'],
    });
    return payload;
  };
}

// In an Express application:
//   const verify = verifier('https://app.example.com/oauth2/jwks', 'https://app.example.com', 'app.example.com');
//   app.use(async (req, res, next) => {
//     try { req.user = (await verify(req.get('X-Idgate-Assertion') ?? '')).sub; next(); }
//     catch { res.sendStatus(401); }
//   });

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const opt = (name) => {
    const i = args.indexOf(`--${name}`);
    if (i < 0 || i + 1 >= args.length) throw new Error(`--${name} is required`);
    const [value] = args.splice(i, 2).slice(1);
    return value;
  };
  const [jwks, issuer, audience] = [opt('jwks'), opt('issuer'), opt('audience')];
  try {
    const claims = await verifier(jwks, issuer, audience)(args[0] ?? '');
    console.log(JSON.stringify(claims, Object.keys(claims).sort()));
  } catch (e) {
    console.error(`refused: ${e.code ?? e.name}: ${e.message}`);
    process.exit(1);
  }
}
