// Reference peer for bench/run row 3: oidc-provider issuing RS256 JWT access tokens through the
// client-credentials grant (a resource indicator makes the token a JWT), over HTTPS on
// 127.0.0.1, one worker per core.
//
// node bench/peers/oidc.mjs PORT CERT_DIR WORKERS
//   CERT_DIR holds cert.pem and key.pem (from `lanyard-loadgen cert`).
// Stops by itself after an hour if nobody stops it first.

import cluster from 'node:cluster';
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';

const [port, certDir, workersArg] = process.argv.slice(2);
const workers = Math.max(1, Number(workersArg) || 1);
const LIFETIME_MS = 3600 * 1000;

if (cluster.isPrimary) {
  // One signing key for every worker, as one issuer would have.
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'bench', use: 'sig', alg: 'RS256' };
  for (let i = 0; i < workers; i += 1) {
    cluster.fork({ BENCH_JWK: JSON.stringify(jwk) });
  }
  const stop = () => {
    for (const w of Object.values(cluster.workers)) w.kill('SIGTERM');
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  setTimeout(stop, LIFETIME_MS).unref();
} else {
  const { default: Provider } = await import('oidc-provider');
  const jwk = JSON.parse(process.env.BENCH_JWK);
  const issuer = `https://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: 'bench-client',
      client_secret: 'bench-client-secret-0123456789abcdef',
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_post',
    }],
    jwks: { keys: [jwk] },
    scopes: ['read'],
    cookies: { keys: ['bench-cookie-key-not-secret'] },
    ttl: { ClientCredentials: 3600 },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => 'https://vault.azure.net',
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resourceIndicator) => ({
          scope: 'read',
          audience: resourceIndicator,
          accessTokenTTL: 3600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
  });
  const server = https.createServer({
    key: fs.readFileSync(path.join(certDir, 'key.pem')),
    cert: fs.readFileSync(path.join(certDir, 'cert.pem')),
    keepAliveTimeout: 60_000,
  }, provider.callback());
  server.listen(Number(port), '127.0.0.1');
}
