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
// Phases: any (shm and one syscall; never yields). Cost: claim = one add (free) or get + add; renew = get + set.
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
 * Takes or renews lease NAME for ttl seconds. Returns true when this process holds it afterwards.
 * A lease held by a dead process is taken over at once. Never waits.
 */
export function claim(name: string, ttl: number): boolean {
    const d = dict();
    const key = LEASE_PREFIX + name;
    const pid = me();
    const [ok, err] = d.add(key, pid, ttl);
    if (ok) return true;
    if (err !== "exists") return false; // no memory: nobody can hold it now; the caller retries later
    const [holder] = d.get(key);
    if (holder === pid) {
        d.set(key, pid, ttl);
        return true;
    }
    if (holder === undefined || type(holder) !== "number" || pidAlive(holder as number)) {
        // expired between add and get: one more add; otherwise the holder lives
        if (holder === undefined) return d.add(key, pid, ttl)[0] === true;
        return false;
    }
    return takeOver(d, key, holder as number, pid, ttl);
}

/** The holder is dead: exactly one claimant wins the takeover guard and frees the key; then the usual add. */
function takeOver(d: NgxSharedDict, key: string, dead: number, pid: number, ttl: number): boolean {
    const [won] = d.add(`${key}:x${dead}`, pid, ttl);
    if (won && d.get(key)[0] === dead) {
        d.delete(key);
        ngx.log(ngx.WARN, "dyups: ", key, " was held by process ", dead, ", which is gone: taken over");
    }
    return d.add(key, pid, ttl)[0] === true;
}

/**
 * Takes lease NAME for ttl seconds only if nobody holds it (or its holder is dead): an exclusive lock,
 * for a critical section that must not be entered twice, even by two requests of this worker. Never waits.
 */
export function acquire(name: string, ttl: number): boolean {
    const d = dict();
    const key = LEASE_PREFIX + name;
    const pid = me();
    const [ok, err] = d.add(key, pid, ttl);
    if (ok) return true;
    if (err !== "exists") return false;
    const [holder] = d.get(key);
    if (holder === undefined) return d.add(key, pid, ttl)[0] === true;
    if (holder === pid || type(holder) !== "number" || pidAlive(holder as number)) return false;
    return takeOver(d, key, holder as number, pid, ttl);
}

/** Extends NAME by ttl seconds if this process holds it. Returns whether it does. */
export function renew(name: string, ttl: number): boolean {
    const d = dict();
    const key = LEASE_PREFIX + name;
    if (d.get(key)[0] !== me()) return false;
    d.set(key, me(), ttl);
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
