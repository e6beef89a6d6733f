// The challenge page's script (crates/broker/templates/challenge.js) computes SHA-256 in
// plain JavaScript and finds an answer with enough leading zero bits. Check it against
// node:crypto, and that its answers satisfy the server's rule.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const { solve, sha256 } = require(path.join(here, '..', '..', 'crates', 'broker', 'templates', 'challenge.js'));

const hex = (words) => Array.from(words, (w) => (w >>> 0).toString(16).padStart(8, '0')).join('');
const zeroBits = (buf) => {
  let z = 0;
  for (const b of buf) {
    if (b === 0) { z += 8; continue; }
    return z + Math.clz32(b) - 24;
  }
  return z;
};

test('the page script hashes like SHA-256', () => {
  for (const s of ['', 'abc', 'x'.repeat(55), 'x'.repeat(56), 'x'.repeat(200), 'é☃ challenge:42']) {
    const want = createHash('sha256').update(s, 'utf8').digest('hex');
    assert.equal(hex(sha256(new TextEncoder().encode(s))), want, JSON.stringify(s));
  }
});

test('its answers meet the difficulty the server checks', () => {
  for (const bits of [4, 8, 12]) {
    const challenge = `eyJraW5kIjoiY2hhbGxlbmdlIn0.sig${bits}`;
    const answer = solve(challenge, bits);
    assert.ok(answer.length > 0);
    const digest = createHash('sha256').update(`${challenge}:${answer}`).digest();
    assert.ok(zeroBits(digest) >= bits, `bits ${bits}`);
  }
});
