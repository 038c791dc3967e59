/** @noSelfInFile */
// Failed authentications per client at the HTTP interface (the rate limit of dyups.http.auth), in the
// shared dict so that every worker counts the same failures. Keys: af:<client> (see store/keys.ts).
// Phases: content (the interface). Cost: one get per authenticated request; add + incr per failure.
// Written with safe_add: counters never evict configuration. A full dict means a failure cannot be
// counted (reported to the caller, which logs it); the interface keeps answering.
// Race accepted: two workers counting the same client's failures at once both incr one key: exact.
import { Result } from "../errors";
import { dict } from "./dict";
import { AUTH_FAIL_PREFIX } from "./keys";

/** Failed authentications of CLIENT in its current window (0 when none). */
export function failures(client: string): number {
    const [n] = dict().get(AUTH_FAIL_PREFIX + client);
    return (n as number | undefined) ?? 0;
}

/** Seconds until CLIENT's window ends (0 when it has none). */
export function windowLeft(client: string): number {
    const [ttl] = dict().ttl(AUTH_FAIL_PREFIX + client);
    return ttl !== undefined && ttl > 0 ? ttl : 0;
}

/**
 * Counts one failed authentication of CLIENT; the first one opens a window of `window` seconds.
 * Returns the count in the window, or a reason when the dict cannot hold the counter.
 */
export function addFailure(client: string, window: number): Result<number> {
    const d = dict();
    const key = AUTH_FAIL_PREFIX + client;
    const [ok, err] = d.safe_add(key, 0, window);
    if (!ok && err !== "exists") return $multi(undefined, `cannot count failed authentications: ${err}`);
    const [n, ierr] = d.incr(key, 1);
    // expired between add and incr: a new window with this failure
    if (n === undefined) {
        const [ok2, err2] = d.safe_add(key, 1, window);
        if (!ok2) return $multi(undefined, `cannot count failed authentications: ${err2 ?? ierr}`);
        return $multi(1, undefined);
    }
    return $multi(n, undefined);
}
