/** An incremental Server-Sent Events parser (WHATWG rules), for streams read with `fetch`. */
export interface SseMessage {
  event: string;
  data: string;
  /** The last event id string at dispatch time. */
  id: string;
}

export class SseParser {
  private buf = "";
  private data: string[] = [];
  private event = "";
  private idBuf = "";
  /** The last event id string, updated by id-only blocks too. */
  lastId = "";
  private started = false;

  constructor(private onMessage: (m: SseMessage) => void, private onId: (id: string) => void) {}

  feed(chunk: string): void {
    this.buf += chunk;
    if (!this.started && this.buf) {
      this.started = true;
      if (this.buf.charCodeAt(0) === 0xfeff) this.buf = this.buf.slice(1);
    }
    let start = 0;
    for (;;) {
      const m = /\r\n|\r|\n/g;
      m.lastIndex = start;
      const hit = m.exec(this.buf);
      // A lone \r at the end may be the first half of \r\n: wait for the next chunk.
      if (!hit || (hit[0] === "\r" && hit.index === this.buf.length - 1)) break;
      this.line(this.buf.slice(start, hit.index));
      start = hit.index + hit[0].length;
    }
    this.buf = this.buf.slice(start);
  }

  private line(line: string): void {
    if (line === "") return this.dispatch();
    if (line[0] === ":") return;
    const i = line.indexOf(":");
    const name = i < 0 ? line : line.slice(0, i);
    let value = i < 0 ? "" : line.slice(i + 1);
    if (value[0] === " ") value = value.slice(1);
    if (name === "event") this.event = value;
    else if (name === "data") this.data.push(value);
    else if (name === "id" && !value.includes("\0")) this.idBuf = value;
  }

  private dispatch(): void {
    if (this.idBuf !== this.lastId) {
      this.lastId = this.idBuf;
      if (!this.data.length) this.onId(this.lastId);
    }
    if (this.data.length) {
      this.onMessage({ event: this.event || "message", data: this.data.join("\n"), id: this.lastId });
    }
    this.data = [];
    this.event = "";
  }
}
