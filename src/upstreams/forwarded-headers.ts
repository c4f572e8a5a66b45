// Headers a 2026 request carried that the gateway does not recognise but must pass on: an
// intermediary forwards an Mcp-Param-{Name} header it does not know (2026-07-28, Streamable HTTP,
// "Server Behavior for Custom Headers"). The front notes them on the message it hands the
// pipeline; the 2026 HTTP connector sends them with that message (its own headers win).
const forwarded = new WeakMap<object, Record<string, string>>();

export function forwardHeaders(message: object, headers: Record<string, string>): void {
  if (Object.keys(headers).length) forwarded.set(message, headers);
}

export function forwardedHeaders(message: object): Record<string, string> | undefined {
  return forwarded.get(message);
}
