/** @noSelfInFile */
/// <reference types="@typescript-to-lua/language-extensions" />
// Lua modules loaded with require(). `import * as x from "ngx.balancer"` compiles to
// `local x = require("ngx.balancer")` — TSTL keeps ambient module names verbatim.
// All these module functions are dot-called => @noSelfInFile. Instance methods called with a
// colon (resolver:query) declare `this: T` explicitly.
//

declare module "ngx.balancer" {
    /** ok, err. Only in balancer_by_lua*. host must be an IP address (or a unix: path). */
    export function set_current_peer(host: string, port?: number): LuaMultiReturn<[true | undefined, string | undefined]>;
    /** ok, err. Extra tries on top of the current one (capped by proxy_next_upstream_tries). */
    export function set_more_tries(count: number): LuaMultiReturn<[true | undefined, string | undefined]>;
    /** state_name ("failed"|"next"|undefined on first try), status_code */
    export function get_last_failure(): LuaMultiReturn<["failed" | "next" | undefined, number | undefined]>;
    export function set_timeouts(connect?: number, send?: number, read?: number): LuaMultiReturn<[true | undefined, string | undefined]>;
    /** lua-nginx-module >= 0.10.27 (recent OpenResty) only (absent in Debian's lua-resty-core 0.1.25): feature-detect it. */
    export const enable_keepalive: ((this: void, idleTimeout?: number, maxRequests?: number) => LuaMultiReturn<[true | undefined, string | undefined]>) | undefined;
}

declare module "cjson.safe" {
    /** @noSelf */
    interface CjsonSafe {
        /** (value) or (undefined, err) — never throws */
        decode(text: string): LuaMultiReturn<[unknown, undefined] | [undefined, string]>;
        encode(value: unknown): LuaMultiReturn<[string, undefined] | [undefined, string]>;
        /** light userdata that JSON null decodes to (truthy in Lua!) */
        readonly null: NgxNull;
        // --- OpenResty lua-cjson fork only: ABSENT (nil) in Debian's lua-cjson 2.1.0 (mpx upstream) ---
        /** assign to a field to force [] encoding (OpenResty fork only) */
        readonly empty_array?: unknown;
        readonly array_mt?: object;
        encode_empty_table_as_object?(enable: boolean | "on" | "off"): void;
        decode_array_with_array_mt?(enable: boolean): void;
        // --- present in both ---
        encode_sparse_array(convert?: boolean, ratio?: number, safe?: number): void;
        /** the deepest nesting decode accepts (default 1000); deeper input is an error, not a crash */
        decode_max_depth(depth: number): number;
        /** false: NaN, Infinity and hex numbers are decode errors */
        decode_invalid_numbers(enable: boolean): void;
        /** returns an independent module instance with its own settings */
        ["new"](): CjsonSafe;
    }
    const cjson: CjsonSafe;
    export = cjson;
}

// lua-resty-dns. NB: Debian's lua-nginx-dns installs it as "nginx.dns.resolver"
// (/usr/share/lua/5.1/nginx/dns/resolver.lua); OpenResty bundles ship "resty.dns.resolver".
declare namespace RestyDns {
    interface DnsAnswer {
        name: string;
        type: number;
        address?: string;
        cname?: string;
        ttl: number;
        section?: number;
        /** SRV records */
        target?: string;
        port?: number;
        weight?: number;
        priority?: number;
    }
    /** answers is a Lua sequence; on DNS-level error it has errcode/errstr fields instead */
    interface DnsAnswers extends Array<DnsAnswer> {
        errcode?: number;
        errstr?: string;
    }
    interface ResolverOptions {
        nameservers: (string | [string, number])[];
        retrans?: number;
        timeout?: number;
        no_recurse?: boolean;
        no_random?: boolean;
    }
    interface Resolver {
        /** r:query(name, opts) -> answers | (nil, err). Uses cosockets: not in init_worker/balancer/log phases. */
        query(this: Resolver, name: string, options?: { qtype?: number; authority_section?: boolean; additional_section?: boolean }): LuaMultiReturn<[DnsAnswers | undefined, string | undefined]>;
        tcp_query(this: Resolver, name: string, options?: { qtype?: number }): LuaMultiReturn<[DnsAnswers | undefined, string | undefined]>;
        set_timeout(this: Resolver, ms: number): void;
    }
    interface ResolverModule {
        /** called as resolver:new{...} (colon) */
        ["new"](this: ResolverModule, opts: ResolverOptions): LuaMultiReturn<[Resolver | undefined, string | undefined]>;
        readonly TYPE_A: 1;
        readonly TYPE_CNAME: 5;
        readonly TYPE_AAAA: 28;
        readonly TYPE_SRV: 33;
    }
}
declare module "nginx.dns.resolver" {
    const resolver: RestyDns.ResolverModule;
    export = resolver;
}
declare module "resty.dns.resolver" {
    const resolver: RestyDns.ResolverModule;
    export = resolver;
}

/** LuaJIT extension: preallocated table (narr array slots, nrec hash slots). */
declare module "table.new" {
    /** @noSelf */
    function tnew(narr: number, nrec: number): any;
    export = tnew;
}
declare module "table.clear" {
    /** @noSelf */
    function tclear(t: object): void;
    export = tclear;
}

declare module "ngx.process" {
    /** "master" | "worker" | "single" | "privileged agent" | "signaller" ... */
    export function type(): string;
}


// LuaJIT's FFI, as a module (it is not a global in OpenResty): `import * as ffi from "ffi"`.
declare module "ffi" {
    export function cdef(defs: string): void;
    export const C: unknown;
    /** the C errno of the last call through the FFI */
    export function errno(): number;
    /** a cdata of C type `ct` from `v` (a Lua string as "const char *"; a pointer cast to "uintptr_t" gives its address) */
    export function cast(ct: string | CType, v: unknown): unknown;
    /** a C type object (parsed once) */
    export interface CType { readonly __ctype: never }
    function typeofC(ct: string): CType;
    export { typeofC as typeof };
    /** a Lua string from a C pointer (NUL-terminated, or `len` bytes) */
    function string_(p: unknown, len?: number): string;
    export { string_ as string };
}

// lua-resty-core's base module: the current request (a cdata pointer), for code that keys per-request state.
declare module "resty.core.base" {
    /** the current request as a cdata `ngx_http_request_t *`, or undefined outside a request */
    export function get_request(this: void): unknown;
}

// lua-resty-core's ngx.semaphore (light threads and timers of one worker wake each other).
declare module "ngx.semaphore" {
    export interface Semaphore {
        /** ok, err ("timeout") */
        wait(this: Semaphore, seconds: number): LuaMultiReturn<[boolean, string | undefined]>;
        post(this: Semaphore, n?: number): void;
        count(this: Semaphore): number;
    }
    /** @noSelf */
    function create(n?: number): LuaMultiReturn<[Semaphore | undefined, string | undefined]>;
    export { create as new };
}

