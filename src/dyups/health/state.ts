/** @noSelfInFile */
// The health state of one checked peer and its rise/fall rule, exactly as the check module counts
// (ngx_http_upstream_check_status_update): a success sets rise + 1 and fall = 0, and turns a down peer up
// once rise >= `rise`; a failure sets fall + 1 and rise = 0, and turns an up peer down once fall >= `fall`.
// Both counters grow without bound (the status page shows them). Pure: tested under plain LuaJIT.
//
// Encoding (the shm value, store/health.ts): "down rise fall since last probes failures|error", numbers
// in decimal, `down` 0/1, times in seconds (ngx.now()), `error` the last failure's reason ("" when none).

export interface HealthState {
    down: boolean;
    /** consecutive successes / failures */
    rise: number;
    fall: number;
    /** when the peer entered its current up/down state (ngx.now() seconds) */
    since: number;
    /** the end of the last probe (0: never probed) */
    last: number;
    /** probes run and failures seen since the state was created */
    probes: number;
    failures: number;
    /** the last failure's reason, "" when none yet */
    lastError: string;
}

/** A state that does not exist yet: down when default_down (the module's default), counters at 0. */
export function newState(defaultDown: boolean, now: number): HealthState {
    return { down: defaultDown, rise: 0, fall: 0, since: now, last: 0, probes: 0, failures: 0, lastError: "" };
}

/**
 * Counts one probe result. Returns "up" or "down" when the state changed (log it once), else undefined.
 * riseN / fallN: the check's `rise` and `fall`.
 */
export function countProbe(st: HealthState, ok: boolean, reason: string, riseN: number, fallN: number, now: number): "up" | "down" | undefined {
    st.probes = st.probes + 1;
    st.last = now;
    if (ok) {
        st.rise = st.rise + 1;
        st.fall = 0;
        if (st.down && st.rise >= riseN) {
            st.down = false;
            st.since = now;
            return "up";
        }
        return undefined;
    }
    st.failures = st.failures + 1;
    st.lastError = reason;
    st.fall = st.fall + 1;
    st.rise = 0;
    if (!st.down && st.fall >= fallN) {
        st.down = true;
        st.since = now;
        return "down";
    }
    return undefined;
}

export function encodeState(st: HealthState): string {
    // "|" cannot be in a number: the error text after it may hold anything (newlines are replaced)
    const e = st.lastError;
    const err = e === "" || string.find(e, "[\r\n]")[0] === undefined ? e : string.gsub(e, "[\r\n]", " ")[0];
    return `${st.down ? 1 : 0} ${st.rise} ${st.fall} ${st.since} ${st.last} ${st.probes} ${st.failures}|${err}`;
}

/** The state an encoded value holds, or undefined when it is not one. */
export function decodeState(raw: string): HealthState | undefined {
    const [d, r, f, since, last, probes, failures, err] = string.match(raw, "^([01]) (%d+) (%d+) ([%d%.e%+%-]+) ([%d%.e%+%-]+) (%d+) (%d+)|(.*)$");
    if (d === undefined) return undefined;
    return {
        down: d === "1",
        rise: tonumber(r) as number,
        fall: tonumber(f) as number,
        since: tonumber(since) ?? 0,
        last: tonumber(last) ?? 0,
        probes: tonumber(probes) as number,
        failures: tonumber(failures) as number,
        lastError: err as string,
    };
}
