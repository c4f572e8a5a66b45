// Resumability for the Streamable HTTP front: the SDK transport stores each SSE event here and,
// when a client reconnects with Last-Event-ID, replays what that stream missed. Bounded per
// session, so a client that never reconnects costs a fixed amount of memory.
import type { EventStore } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';

export class BoundedEventStore implements EventStore {
  private readonly events = new Map<string, { streamId: string; message: JSONRPCMessage }>();
  private counter = 0;

  /** The last events of a session, enough to resume a dropped stream, not a session's history. */
  constructor(private readonly capacity = 128) {}

  async storeEvent(streamId: string, message: JSONRPCMessage): Promise<string> {
    const eventId = `${streamId}.${++this.counter}`;
    this.events.set(eventId, { streamId, message });
    if (this.events.size > this.capacity) this.events.delete(this.events.keys().next().value!);
    return eventId;
  }

  async getStreamIdForEventId(eventId: string): Promise<string | undefined> {
    return this.events.get(eventId)?.streamId ?? streamOf(eventId);
  }

  async replayEventsAfter(lastEventId: string, { send }: { send: (eventId: string, message: JSONRPCMessage) => Promise<void> }): Promise<string> {
    const streamId = this.events.get(lastEventId)?.streamId ?? streamOf(lastEventId);
    if (!streamId) throw new Error(`unknown event id ${lastEventId}`);
    let after = false;
    for (const [id, e] of this.events) {
      if (after && e.streamId === streamId) await send(id, e.message);
      if (id === lastEventId) after = true;
    }
    return streamId;
  }
}

function streamOf(eventId: string): string | undefined {
  const dot = eventId.lastIndexOf('.');
  return dot > 0 ? eventId.slice(0, dot) : undefined;
}
