/** @noSelfInFile */
// Leases: one holder per job across the workers of this nginx (and the master during init). Every elected
// job takes its lease here: the writers' lock, the state-file writer, the DNS resolver, and every later
// job (health prober, cluster watcher). A lease is the shm key `lease:<name>` holding the holder's pid,
// with a TTL so that a holder that stops renewing loses it.
//
// Dead holders: a worker killed by SIGKILL cannot release. claim() checks the holder's pid with
// kill(pid, 0) (ESRCH: no such process) and takes a dead holder's lease over at once instead of waiting
// for the TTL. The takeover is guarded by `lease:<name>:x<pid>` (add), so of several workers that find the
// same dead holder exactly one deletes its key; the others then race for the free key with add, as usual.
// Pid reuse by an unrelated process within a TTL would delay the takeover until the TTL: harmless.
//
// Two ways to take a lease: claim() for an elected job (the holder renews it by claiming again), acquire()
// for an exclusive lock (a second acquire fails even in the holder's own process, since two requests of
// one worker may both be inside a yielding section).
// Every write is safe_add/safe_set: a lease never evicts configuration from a full dict (it fails instead:
// not taken). Phases: any (shm and one syscall; never yields). Cost: claim = one add (free) or get + add;
// renew = get + set.
import * as ffi from "ffi";
import { dict } from "./dict";
import { LEASE_PREFIX } from "./keys";

// pcall: another module may have declared kill already (a redefinition raises)
pcall(ffi.cdef, "int kill(int pid, int sig);");
const C = ffi.C as { kill(this: void, pid: number, sig: number): number };
const ESRCH = 3;

/** true unless the process `pid` certainly does not exist (EPERM: it exists, under another user). */
export function pidAlive(pid: number): boolean {
    if (C.kill(pid, 0) === 0) return true;
    return ffi.errno() !== ESRCH;
}

function me(): number {
    return ngx.worker.pid();
}

/**
 * Adds KEY for pid. Returns [true] when added, else [false, holder]: the current holder, or undefined when
 * the add failed for another reason (no memory: nobody can hold it now; the caller retries later).
 */
function take(d: NgxSharedDict, key: string, pid: number, ttl: number): LuaMultiReturn<[boolean, unknown]> {
    const [ok, err] = d.safe_add(key, pid, ttl);
    if (ok) return $multi(true, undefined);
    if (err !== "exists") return $multi(false, undefined);
    const [holder] = d.get(key);
    // expired between the add and the get: one more add
    if (holder === undefined) return $multi(d.safe_add(key, pid, ttl)[0] === true, undefined);
    return $multi(false, holder);
}

/** The holder is dead: exactly one claimant wins the takeover guard and frees the key; then the usual add. */
function takeOver(d: NgxSharedDict, key: string, dead: number, pid: number, ttl: number): boolean {
    const [won] = d.safe_add(`${key}:x${dead}`, pid, ttl);
    if (won && d.get(key)[0] === dead) {
        d.delete(key);
        ngx.log(ngx.WARN, "dyups: ", key, " was held by process ", dead, ", which is gone: taken over");
    }
    return d.safe_add(key, pid, ttl)[0] === true;
}

/** claim (renewable: the holder takes it again) or acquire (exclusive). */
function obtain(name: string, ttl: number, renewable: boolean): boolean {
    const d = dict();
    const key = LEASE_PREFIX + name;
    const pid = me();
    const [ok, holder] = take(d, key, pid, ttl);
    if (ok) return true;
    if (holder === pid && renewable) {
        d.safe_set(key, pid, ttl);
        return true;
    }
    if (holder === pid || type(holder) !== "number" || pidAlive(holder as number)) return false;
    return takeOver(d, key, holder as number, pid, ttl);
}

/**
 * Takes or renews lease NAME for ttl seconds, for an elected job. Returns true when this process holds it
 * afterwards. A lease held by a dead process is taken over at once. Never waits.
 */
export function claim(name: string, ttl: number): boolean {
    return obtain(name, ttl, true);
}

/**
 * Takes lease NAME for ttl seconds only if nobody holds it (or its holder is dead): an exclusive lock,
 * for a critical section that must not be entered twice, even by two requests of this worker. Never waits.
 */
export function acquire(name: string, ttl: number): boolean {
    return obtain(name, ttl, false);
}

/** Extends NAME by ttl seconds if this process holds it. Returns whether it does. */
export function renew(name: string, ttl: number): boolean {
    const d = dict();
    const key = LEASE_PREFIX + name;
    if (d.get(key)[0] !== me()) return false;
    d.safe_set(key, me(), ttl);
    return true;
}

/** Gives NAME up at once if this process holds it (worker exit, end of a write), so another takes it now. */
export function release(name: string): void {
    const d = dict();
    const key = LEASE_PREFIX + name;
    if (d.get(key)[0] === me()) d.delete(key);
}

/** The pid holding NAME now, or undefined. */
export function owner(name: string): number | undefined {
    const [pid] = dict().get(LEASE_PREFIX + name);
    return pid as number | undefined;
}

/** true when this process holds NAME now (one shm get). */
export function held(name: string): boolean {
    return dict().get(LEASE_PREFIX + name)[0] === me();
}
