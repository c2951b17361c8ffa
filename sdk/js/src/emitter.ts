/** A minimal typed event emitter: `on` returns the function that removes the listener. */
export class Emitter<E extends Record<string, unknown[]>> {
  private listeners: { [K in keyof E]?: Set<(...args: E[K]) => void> } = {};

  on<K extends keyof E>(event: K, fn: (...args: E[K]) => void): () => void {
    (this.listeners[event] ??= new Set()).add(fn);
    return () => this.listeners[event]?.delete(fn);
  }

  emit<K extends keyof E>(event: K, ...args: E[K]): void {
    for (const fn of [...(this.listeners[event] ?? [])]) {
      try {
        fn(...args);
      } catch (e) {
        // A listener's error must not break delivery to the others, nor the connection.
        setTimeout(() => {
          throw e;
        });
      }
    }
  }
}
