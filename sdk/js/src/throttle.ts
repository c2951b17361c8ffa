/**
 * "Latest wins": calls `fn` at most once per `ms`, always with the newest arguments, and once
 * more after the window with the last ones (a host's seek bar sends where it ended up).
 */
export function throttle<A extends unknown[]>(fn: (...args: A) => unknown, ms: number): (...args: A) => void {
  let last = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let next: A | undefined;
  const run = (): void => {
    timer = undefined;
    last = Date.now();
    const args = next!;
    next = undefined;
    fn(...args);
  };
  return (...args: A) => {
    next = args;
    if (timer) return;
    const wait = last + ms - Date.now();
    if (wait <= 0) run();
    else timer = setTimeout(run, wait);
  };
}
