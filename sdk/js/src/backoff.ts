/** Reconnect delays: exponential, with full jitter, capped. */
export interface BackoffOptions {
  /** First delay's ceiling, ms (500). */
  minDelay?: number;
  /** Largest delay, ms (20000). */
  maxDelay?: number;
  /** Growth per attempt (2). */
  factor?: number;
  /** A connection that stayed up this long resets the attempts, ms (10000). */
  stableAfter?: number;
}

export class Backoff {
  readonly min: number;
  readonly max: number;
  readonly factor: number;
  readonly stableAfter: number;
  attempt = 0;

  constructor(o: BackoffOptions = {}, private random: () => number = Math.random) {
    this.min = o.minDelay ?? 500;
    this.max = o.maxDelay ?? 20000;
    this.factor = o.factor ?? 2;
    this.stableAfter = o.stableAfter ?? 10000;
  }

  /** The next delay: uniform in [0, min(max, min * factor^attempt)] ("full jitter"). */
  next(): number {
    const ceiling = Math.min(this.max, this.min * this.factor ** this.attempt);
    this.attempt++;
    return Math.floor(this.random() * ceiling);
  }

  reset(): void {
    this.attempt = 0;
  }
}
