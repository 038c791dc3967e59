/** @noSelfInFile */
// Pacing for long jobs in a yieldable phase (a streamed /detail, a state-file save): after about SLICE seconds
// of work (half a millisecond: nginx's clock counts milliseconds), give the worker's event loop a turn, so that
// requests on the same worker wait at most about that long per event.
// The turn: a 0 ms timer posts a semaphore the job waits on, so the job resumes right after the I/O events
// that were ready are handled. (ngx.sleep(0) would do the same only with OpenResty's delayed-events patch,
// which Debian's nginx lacks: there it logs a warning at every call; ngx.sleep(0.001) would idle 1 ms per turn.)
// The clock is read (ngx.update_time: a syscall plus nginx's time strings) once per CHECK bytes of output, or
// per item of more than that, not at every call.
// Cost: per check one clock update (~1 us); per turn one timer and two coroutine switches (~10 us).
import type { Semaphore } from "ngx.semaphore";

/** lua-resty-core's ngx.semaphore, loaded on first use (it needs a real nginx; specs load this module without one) */
let semaphores: { new: (this: void, n?: number) => LuaMultiReturn<[Semaphore | undefined, string | undefined]> } | undefined;

/** seconds of work between turns */
const SLICE = 0.0005;
/** bytes of output between clock reads (an item counts ITEM_COST more) */
const CHECK = 2048;
const ITEM_COST = 64;

export interface Pacer {
    since: number;
    acc: number;
    sema?: Semaphore;
}

export function newPacer(): Pacer {
    ngx.update_time();
    return { since: ngx.now(), acc: 0 };
}

function wake(_premature: boolean, sema: Semaphore): void {
    sema.post(1);
}

/**
 * One item of `bytes` bytes of output done: yields if this job has worked for a slice since its last turn.
 * Yieldable phases only.
 */
export function pace(p: Pacer, bytes: number): void {
    p.acc = p.acc + bytes + ITEM_COST;
    if (p.acc < CHECK) return;
    p.acc = 0;
    ngx.update_time();
    if (ngx.now() - p.since < SLICE) return;
    turn(p);
}

/** Gives the worker's event loop a turn now (yieldable phases only), and starts the job's next slice. */
export function turn(p: Pacer): void {
    if (semaphores === undefined) semaphores = require("ngx.semaphore");
    if (p.sema === undefined && semaphores !== undefined) [p.sema] = semaphores.new(0);
    const sema = p.sema;
    let woken = false;
    if (sema !== undefined) {
        const [ok] = ngx.timer.at(0, wake, sema);
        if (ok === true) woken = sema.wait(1)[0];
    }
    if (!woken) ngx.sleep(0.001);
    ngx.update_time();
    p.since = ngx.now();
}
