import type { Position, Publication } from "./types.js";

/** Parses an SSE id (`epoch-offset36` per channel, joined by `.`); null when malformed. */
export function parseSseId(id: string): Position[] | null {
  if (!id) return null;
  const out: Position[] = [];
  for (const part of id.split(".")) {
    const m = /^([a-z0-9]{1,16})-([0-9a-z]{1,13})$/.exec(part);
    if (!m) return null;
    out.push({ epoch: m[1], offset: parseInt(m[2], 36) });
  }
  return out;
}

/** One `since` item of an SSE request: `channel~epoch-offset36`. */
export function sinceItem(channel: string, p: Position): string {
  return `${channel}~${p.epoch}-${p.offset.toString(36)}`;
}

/**
 * Whether a publication was already seen at position `p`: same epoch, offset not beyond.
 * A publication of another epoch is new (a reset has moved the channel on).
 */
export function seen(p: Position | undefined, pub: Pick<Publication, "epoch" | "offset">): boolean {
  return !!p && p.epoch === pub.epoch && pub.offset <= p.offset;
}

/** Positions kept in `sessionStorage`, so a reloaded page resumes where it was. */
export class PositionStore {
  constructor(
    private storage: Storage | undefined,
    private key: string,
  ) {}

  load(): Record<string, Position> {
    try {
      const v = JSON.parse(this.storage?.getItem(this.key) ?? "{}");
      return v && typeof v === "object" ? v : {};
    } catch {
      return {};
    }
  }

  save(all: Record<string, Position>): void {
    try {
      this.storage?.setItem(this.key, JSON.stringify(all));
    } catch {
      // Full or forbidden storage: positions are then kept in memory only.
    }
  }
}
