/** @noSelfInFile */
// Per worker: the names of the current upstreams in creation order (the order of /list, /detail and the state
// file), kept in step by the registry's catch-up (registry/sync.ts), so that listing needs neither the dict's
// key list (get_keys locks the whole dict while it walks every key) nor a sort per request.
//
// An array of names with their creation versions, sorted by creation version, and each name's position.
// A new upstream has the newest version, so placing it is an append (O(1)); one applied out of order (a
// catch-up that reads a record re-created since) is inserted by binary search (O(n), rare). A deletion
// leaves a tombstone ("") that walks skip; tombstones are compacted away when they outnumber live names
// (amortized O(1)). A rebuild (worker start, a worker far behind) re-sorts once: O(n log n).
// Phases: any (no shm, no yields).

/** names[i]: a name, or "" (a tombstone) */
let names: string[] = [];
/** createdAt[i]: the creation version of names[i] (kept for tombstones too: the array stays sorted) */
let createdAt: number[] = [];
let len = 0;
let live = 0;
const pos: LuaTable<string, number> = new LuaTable();
/** name -> the spelling its latest POST used, when not the lowercase name (listings show it) */
const displays: LuaTable<string, string> = new LuaTable();
/** deleted names -> the place of their tombstone, until the next compaction (paging resumes after them) */
let gone: LuaTable<string, number> = new LuaTable();

function compact(): void {
    const n2: string[] = [];
    const c2: number[] = [];
    let j = 0;
    for (let i = 1; i <= len; i++) {
        const name = names[i - 1];
        if (name !== "") {
            j = j + 1;
            n2[j - 1] = name;
            c2[j - 1] = createdAt[i - 1];
            pos.set(name, j);
        }
    }
    names = n2;
    createdAt = c2;
    len = j;
    gone = new LuaTable();
}

/** Forgets NAME (deleted). */
export function forget(name: string): void {
    const i = pos.get(name);
    if (i === undefined) return;
    names[i - 1] = "";
    pos.delete(name);
    displays.delete(name);
    gone.set(name, i);
    live = live - 1;
    if (len - live > 64 && len - live > live) compact();
}

/**
 * Places NAME, created at version `created` (a replace keeps its place; a re-created name moves), listed as
 * `display` (its latest POST's spelling; undefined: the name itself).
 */
export function place(name: string, created: number, display?: string): void {
    gone.delete(name);
    const i = pos.get(name);
    if (i !== undefined) {
        if (createdAt[i - 1] === created) {
            setDisplay(name, display);
            return;
        }
        forget(name);
    }
    setDisplay(name, display);
    live = live + 1;
    if (len === 0 || createdAt[len - 1] <= created) {
        len = len + 1;
        names[len - 1] = name;
        createdAt[len - 1] = created;
        pos.set(name, len);
        return;
    }
    // binary search for the first position with a later creation version
    let lo = 1;
    let hi = len;
    while (lo < hi) {
        const mid = math.floor((lo + hi) / 2);
        if (createdAt[mid - 1] <= created) lo = mid + 1;
        else hi = mid;
    }
    table.insert(names, lo, name);
    table.insert(createdAt, lo, created);
    len = len + 1;
    for (let k = lo; k <= len; k++) {
        const n = names[k - 1];
        if (n !== "") pos.set(n, k);
    }
    for (const [g, at] of pairs(gone)) if (at >= lo) gone.set(g, at + 1);
}

function setDisplay(name: string, display: string | undefined): void {
    if (display !== undefined && display !== name) displays.set(name, display);
    else displays.delete(name);
}

/** NAME as listings show it: the spelling of its latest POST. */
export function shown(name: string): string {
    return displays.get(name) ?? name;
}

/** Records NAME's listed spelling (a rebuild: see rebuild). */
export function display(name: string, spelled: string | undefined): void {
    setDisplay(name, spelled);
}

/** Rebuilds the order from NAME -> creation version (after a full rebuild of the registry). O(n log n). */
export function rebuild(created: LuaTable<string, number>): void {
    const all: string[] = [];
    let n = 0;
    for (const [name] of pairs(created)) {
        n = n + 1;
        all[n - 1] = name;
    }
    table.sort(all, (a: string, b: string) => {
        const ca = created.get(a) ?? 0;
        const cb = created.get(b) ?? 0;
        return ca === cb ? a < b : ca < cb;
    });
    names = [];
    createdAt = [];
    gone = new LuaTable();
    for (const [name] of pairs(pos)) pos.delete(name);
    for (let i = 1; i <= n; i++) {
        const name = all[i - 1];
        names[i - 1] = name;
        createdAt[i - 1] = created.get(name) ?? 0;
        pos.set(name, i);
    }
    len = n;
    live = n;
}

/** The creation version NAME is listed with, or undefined. */
export function createdOf(name: string): number | undefined {
    const i = pos.get(name);
    return i === undefined ? undefined : createdAt[i - 1];
}

/** How many upstreams are listed. */
export function count(): number {
    return live;
}

/**
 * The position to resume a walk after NAME (0: from the start): its place, or the place it had if it was
 * deleted since the last compaction; undefined when unknown.
 */
export function positionAfter(name: string | undefined): number | undefined {
    if (name === undefined) return 0;
    return pos.get(name) ?? gone.get(name);
}

/**
 * The next listed name after position i: [name, its position], or [undefined, len] at the end. Walks skip
 * tombstones; a walk that yields between steps stays valid across appends and deletions, but a compaction
 * or an out-of-order insert meanwhile may skip or repeat a name (callers resume by name, see positionAfter).
 */
export function nextAfter(i: number): LuaMultiReturn<[string | undefined, number]> {
    let k = i + 1;
    while (k <= len) {
        const name = names[k - 1];
        if (name !== "") return $multi(name, k);
        k = k + 1;
    }
    return $multi(undefined, len);
}

/** Every listed name, in creation order (a new array), as stored or (`spelled`) as listings show them. O(n). */
export function all(spelled?: boolean): string[] {
    const out: string[] = [];
    let n = 0;
    for (let i = 1; i <= len; i++) {
        const name = names[i - 1];
        if (name !== "") {
            n = n + 1;
            out[n - 1] = spelled === true ? shown(name) : name;
        }
    }
    return out;
}
