/** @noSelfInFile */
// The product's shared dict handle (the one named by the `dict` option), looked up once per process, and
// its capacity figures. Only modules under store/ call dict().
import { getOptions } from "../options";

let cached: NgxSharedDict | undefined;

/** Raises when the dict is not declared: a configuration mistake that init() reports at start-up. */
export function dict(): NgxSharedDict {
    if (cached === undefined) {
        const name = getOptions().dict;
        const d = ngx.shared[name];
        if (d === undefined) {
            error(`lua_shared_dict "${name}" is not declared (include nginx/dyups.conf, or declare it and pass { dict = "${name}" })`, 0);
        }
        cached = d;
    }
    return cached;
}

/** Forget the handle (tests and init() after the options change). */
export function resetDict(): void {
    cached = undefined;
}

export interface DictUsage {
    name: string;
    capacity: number;
    /** free pages only: a dict with free space inside used pages shows less than it can take */
    free: number;
}

/** The dict's name, capacity and free bytes (for /status). */
export function usage(): DictUsage {
    const d = dict();
    return { name: getOptions().dict, capacity: d.capacity(), free: d.free_space() };
}
