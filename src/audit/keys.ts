// Ed25519 keys for signed checkpoints. The gateway signs with the private key named by
// audit.signingKey; verify needs only the public key (derived from the private one, or given).
import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { PortcullisError } from '../errors.js';
import type { Checkpoint } from '../store/store.js';
import { canonicalize } from './canonical.js';

export interface CheckpointSigner {
  keyId: string;
  publicKey: KeyObject;
  /** The Ed25519 private key (a KeyObject can be handed to a worker thread, see writer-thread.ts). */
  privateKey: KeyObject;
  /** Signs {seq, hash, ts}; the result carries keyId and signature. */
  sign(unsigned: { seq: number; hash: string; ts: string }): Checkpoint;
}

/** First 16 hex digits of SHA-256 over the public key's SPKI DER: names the key in checkpoints. */
export function keyIdOf(publicKey: KeyObject): string {
  return createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest('hex').slice(0, 16);
}

/** The bytes a checkpoint signature covers. */
export function checkpointPayload(c: { seq: number; hash: string; ts: string; keyId: string | null }): Buffer {
  return Buffer.from(canonicalize({ hash: c.hash, keyId: c.keyId, seq: c.seq, ts: c.ts }), 'utf8');
}

function readKeyFile(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'the file does not exist' : code === 'EACCES' ? 'permission denied' : (e as Error).message;
    throw new PortcullisError('PCL_CONFIG_INVALID', `cannot read the audit signing key ${path}: ${why}`);
  }
}

/** Loads an Ed25519 private key (PEM, PKCS#8). Fails with a message naming the path. */
export function loadSigningKey(path: string): CheckpointSigner {
  const pem = readKeyFile(path);
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(pem);
  } catch (e) {
    throw new PortcullisError('PCL_CONFIG_INVALID', `the audit signing key ${path} is not a PEM private key: ${(e as Error).message}`);
  }
  if (privateKey.asymmetricKeyType !== 'ed25519') {
    throw new PortcullisError('PCL_CONFIG_INVALID', `the audit signing key ${path} is a ${privateKey.asymmetricKeyType} key; an Ed25519 key is needed (openssl genpkey -algorithm ed25519)`);
  }
  return signerOf(privateKey);
}

/** The signer of an Ed25519 private key. */
export function signerOf(privateKey: KeyObject): CheckpointSigner {
  const publicKey = createPublicKey(privateKey);
  const keyId = keyIdOf(publicKey);
  return {
    keyId,
    publicKey,
    privateKey,
    sign({ seq, hash, ts }) {
      const signature = sign(null, checkpointPayload({ seq, hash, ts, keyId }), privateKey).toString('base64');
      return { seq, hash, ts, signature, keyId };
    },
  };
}

/** Loads a public key for verification from a public PEM, or derives it from a private PEM. */
export function loadVerifyKey(path: string): KeyObject {
  const pem = readKeyFile(path);
  let key: KeyObject;
  try {
    key = pem.includes('PRIVATE KEY') ? createPublicKey(createPrivateKey(pem)) : createPublicKey(pem);
  } catch (e) {
    throw new PortcullisError('PCL_CONFIG_INVALID', `${path} is not a PEM key: ${(e as Error).message}`);
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new PortcullisError('PCL_CONFIG_INVALID', `${path} is a ${key.asymmetricKeyType} key; an Ed25519 key is needed`);
  return key;
}

export function checkpointSignatureValid(c: Checkpoint, publicKey: KeyObject): boolean {
  if (!c.signature) return false;
  try {
    return verify(null, checkpointPayload(c), publicKey, Buffer.from(c.signature, 'base64'));
  } catch {
    return false;
  }
}
