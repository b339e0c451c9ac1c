// The parts of strict Ed25519 (PROTOCOL §5.3) that WebCrypto does not guarantee: WebCrypto
// on OpenSSL (Node) accepts small-order public keys and R values, so these checks run
// before the signature is handed to crypto.subtle.verify. Point decoding follows
// curve25519-dalek: y is reduced modulo p, then x is recovered.

const P = 2n ** 255n - 19n;
const L = 2n ** 252n + 27742317777372353535851937790883648493n;

const mod = (a: bigint): bigint => ((a % P) + P) % P;
function pow(b: bigint, e: bigint): bigint {
  let r = 1n;
  b = mod(b);
  for (; e > 0n; e >>= 1n, b = (b * b) % P) if (e & 1n) r = (r * b) % P;
  return r;
}
const D = mod(-121665n * pow(121666n, P - 2n));
const SQRT_M1 = pow(2n, (P - 1n) / 4n);

function leInt(b: Uint8Array): bigint {
  let n = 0n;
  for (let i = b.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(b[i]!);
  return n;
}

/** The y coordinate (reduced) of a valid point encoding, or null if none decodes. */
export function decodeY(enc: Uint8Array): bigint | null {
  if (enc.length !== 32) return null;
  const y = mod(leInt(enc) & ((1n << 255n) - 1n));
  const u = mod(y * y - 1n);
  const v = mod(D * y * y + 1n);
  // x = u v^3 (u v^7)^((p-5)/8), then fix up by sqrt(-1) (RFC 8032 §5.1.3).
  let x = mod(u * pow(v, 3n) * pow(u * pow(v, 7n), (P - 5n) / 8n));
  const vx2 = mod(v * x * x);
  if (vx2 !== u) {
    if (vx2 !== mod(-u)) return null;
    x = mod(x * SQRT_M1);
  }
  return y;
}

// The eight torsion points have y in {1, -1, 0, ±Y8} (identity, order 2, order 4, order 8).
const Y8 = 0x7a03ac9277fdc74ec6cc392cfa53202a0f67100d760b3cba4fd84d3d706a17c7n; // little-endian c7176a70…7a
const SMALL_ORDER_Y = [0n, 1n, P - 1n, Y8, P - Y8];

/** A valid point that is not of small order. */
export function isStrictPoint(enc: Uint8Array): boolean {
  const y = decodeY(enc);
  return y !== null && !SMALL_ORDER_Y.includes(y);
}

/** S < L and neither A nor R of small order (the equation itself is WebCrypto's). */
export function strictPrecheck(pub: Uint8Array, sig: Uint8Array): boolean {
  return sig.length === 64 && leInt(sig.subarray(32)) < L && isStrictPoint(pub) && isStrictPoint(sig.subarray(0, 32));
}
