// How many bytes a message from an upstream took on the wire, noted by the connector that read it,
// so the session can hold it against limits.maxResultBytes without serialising it again.
const sizes = new WeakMap<object, number>();

export function noteWireSize(message: object, bytes: number): void {
  sizes.set(message, bytes);
}

/** The message's size as read, or as it serialises when no connector noted it. */
export function wireSize(message: object): number {
  return sizes.get(message) ?? Buffer.byteLength(JSON.stringify(message));
}
