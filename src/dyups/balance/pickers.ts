/** @noSelfInFile */
// Pickers by name, for the `balancer NAME [key=value ...];` directive: the built-in `ewma` (ewma.ts) and the
// pickers registered from Lua with require("dyups").register_picker(NAME, module) (init.ts checks the phase).
// The registry is per Lua VM: what init_by_lua registers every worker inherits; what init_worker_by_lua
// registers, each worker registers for itself. Pure (no ngx.*): tested under plain LuaJIT.
//
// A REGISTERED MODULE is a Lua table of plain functions (no self), the Picker interface of types.ts:
//   validate(args) -> config | nil, reason      optional; without it the picker takes no arguments
//   build(peers, config, servers) -> data       optional; data is kept as peers.data for this version
//   pick(peers, peer_state, tried, key) -> gi   required
//   outcome(peers, peer_state, gi, ok, elapsed) optional
// It gets a kind of its own: its pick runs behind registeredPick, which enforces what every built-in method
// guarantees, whatever the module answers: the peer is a usable one (not down, not tried, available), a
// backup only when no primary is usable, and 0 only when nothing is usable. Anything else is replaced by
// round robin's pick, and reported once per version through the warning hook (set by registry/build.ts).
// validate and build run under pcall at apply and build time (peer_set.ts): a module that raises there is
// refused (a write) or replaced by round robin (a stored upstream), never a failed build. pick and outcome
// run unguarded (per request): an error there fails that request, as any Lua error in balancer_by_lua does.
//
// Cost: per try, one call into the module plus one usable() check of its answer (O(primaries) more only when
// it answers a backup); registration and resolution are O(1); pickerNames O(pickers log pickers).
import { balancerNameProblem } from "../parse/upstream";
import { EWMA } from "./ewma";
import { rrPick } from "./swrr";
import type { PeerSet, PeerState, Picker, Tried } from "./types";
import { usable } from "./walk";

/** A registered Lua module (see above). */
/** @noSelf */
interface PickerModule {
    validate?(args: LuaTable<string, string>): LuaMultiReturn<[unknown, unknown]>;
    build?(set: PeerSet, config: unknown, servers: string[]): unknown;
    pick(set: PeerSet, state: PeerState, tried: Tried, key: string | undefined): unknown;
    outcome?(set: PeerSet, state: PeerState, gi: number, ok: boolean, elapsed: number): void;
}

/** The Picker the registry makes of a module. */
interface Registered extends Picker {
    module: PickerModule;
}

const BUILTIN = new LuaTable<string, Picker>();
BUILTIN.set(EWMA.name, EWMA);

let registered = new LuaTable<string, Registered>();

function noWarning(this: void, _msg: string): void {
    // pure by default: registry/build.ts sets a hook that logs
}
let warn: (this: void, msg: string) => void = noWarning;

/** The function that reports a module's bad answers (once per version). registry/build.ts logs them. */
export function setPickerWarning(fn: (this: void, msg: string) => void): void {
    warn = fn;
}

function isFunctionOrNil(v: unknown): boolean {
    return v === undefined || type(v) === "function";
}

// ---------------------------------------------------------------------------------------------------
// The registered kind (hot)

function anyUsablePrimary(set: PeerSet, state: PeerState, tried: Tried): boolean {
    for (const gi of $range(1, set.nPrimary)) {
        if (usable(set, state, tried, gi)) return true;
    }
    return false;
}

/** Cold path of registeredPick: the module's answer was refused; warn once per version. */
function refused(set: PeerSet, answer: unknown, used: number): void {
    const n = (set.misPicks ?? 0) + 1;
    set.misPicks = n;
    if (n > 1) return;
    warn(`balancer "${set.picker.name}" answered ${tostring(answer)}, which is not a usable peer of this request ` +
        `(${set.total} peers, ${set.nPrimary} primaries); round robin picked ${used} (reported once per version)`);
}

/** pick for every registered module: the module's answer, if it keeps the contract; else round robin's. */
function registeredPick(set: PeerSet, state: PeerState, tried: Tried, key: string | undefined): number {
    const answer = (set.picker as Registered).module.pick(set, state, tried, key);
    if (type(answer) === "number") {
        const gi = answer as number;
        if (gi >= 1 && gi <= set.total && math.floor(gi) === gi && usable(set, state, tried, gi)) {
            if (gi <= set.nPrimary || !anyUsablePrimary(set, state, tried)) return gi;
        }
    }
    const gi = rrPick(set, state, tried);
    if (answer !== 0 || gi !== 0) refused(set, answer, gi);
    return gi;
}

// ---------------------------------------------------------------------------------------------------
// Registration and resolution (apply and build time)

/** A picker that takes no arguments (a module without validate). */
function noArguments(args: LuaTable<string, string>): LuaMultiReturn<[unknown, undefined] | [undefined, string]> {
    for (const [k] of pairs(args)) return $multi(undefined, `unknown parameter "${k}" (this balancer takes none)`);
    return $multi(undefined, undefined);
}

/**
 * Registers `module` under `name` (replacing an earlier registration of that name: versions built from then
 * on use it). Returns a reason when refused: a bad name, a built-in or nginx name, a module that is not a
 * table with a `pick` function; validate, build and outcome must be functions or nil.
 */
export function registerPicker(name: unknown, module: unknown): string | undefined {
    if (type(name) !== "string") return `bad argument #1 to 'register_picker' (string expected, got ${type(name)})`;
    const n = name as string;
    const bad = balancerNameProblem(n);
    if (bad !== undefined) return bad;
    if (BUILTIN.get(n) !== undefined) return `"${n}" is a built-in balancer`;
    if (type(module) !== "table") return `bad argument #2 to 'register_picker' (table expected, got ${type(module)})`;
    const m = module as PickerModule;
    if (type(m.pick) !== "function") return "the module has no pick function";
    for (const f of ["validate", "build", "outcome"]) {
        if (!isFunctionOrNil((module as LuaTable<string, unknown>).get(f))) return `the module's ${f} is not a function`;
    }
    const p: Registered = {
        name: n, module: m, pick: registeredPick,
        validate: m.validate !== undefined ? (m.validate as Picker["validate"]) : noArguments,
        build: m.build, outcome: m.outcome,
    };
    registered.set(n, p);
    return undefined;
}

/** Tests: forget every registration. */
export function resetPickers(): void {
    registered = new LuaTable();
}

/** The picker named NAME (built-in or registered here), or undefined. */
export function pickerNamed(name: string): Picker | undefined {
    return BUILTIN.get(name) ?? registered.get(name);
}

/** The names a `balancer` directive can use in this Lua VM, sorted. */
export function pickerNames(): string[] {
    const out: string[] = [];
    for (const [n] of pairs(BUILTIN)) out[out.length] = n;
    for (const [n] of pairs(registered)) out[out.length] = n;
    table.sort(out);
    return out;
}

/** `balancer NAME [k=v ...]` -> [picker, config], or [undefined, reason, registered]. */
export type Resolved = LuaMultiReturn<[Picker, unknown, undefined] | [undefined, string, boolean]>;

/**
 * Resolves a `balancer` directive: the picker, and the configuration its validate made of the arguments
 * ("k=v" words as the parser stored them). Failures: not registered in this Lua VM ([undefined, reason,
 * false]), or arguments refused, or validate raised ([undefined, reason, true]). Apply and build time only.
 */
export function resolvePicker(name: string, argv: string[] | undefined): Resolved {
    const p = pickerNamed(name);
    if (p === undefined) {
        const names = pickerNames();
        return $multi(undefined, `unknown balancer "${name}": not registered in this nginx (registered: ${table.concat(names, ", ")})`, false);
    }
    const args = new LuaTable<string, string>();
    if (argv !== undefined) {
        for (const [, w] of ipairs(argv)) {
            const [k, v] = string.match(w, "^([^=]+)=(.*)$");
            if (k === undefined || v === undefined) return $multi(undefined, `balancer "${name}": invalid parameter "${w}"`, true);
            args.set(k, v);
        }
    }
    const validate = p.validate ?? noArguments;
    const [ok, config, reason] = pcall(validate, args);
    if (!ok) return $multi(undefined, `balancer "${name}": its validate failed: ${tostring(config)}`, true);
    if (reason !== undefined) return $multi(undefined, `balancer "${name}": ${tostring(reason)}`, true);
    return $multi(p, config, undefined);
}

export { registeredPick };
