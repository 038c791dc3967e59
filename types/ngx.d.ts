/** @noSelfInFile */
/// <reference types="@typescript-to-lua/language-extensions" />
// Minimal OpenResty (lua-nginx-module 0.10.23 + lua-resty-core 0.1.25) declarations for TypeScriptToLua.
// Everything on the `ngx` global is called with a dot (ngx.say(...)). NOTE: @noSelfInFile / noImplicitSelf do NOT
// apply to interface methods (TSTL only honours @noSelf on the interface itself, or `this: void` per method),
// so every dot-called interface below carries /** @noSelf */.
// Objects used with a colon (shared dicts, resolver instances) declare an explicit
// `this: <Type>` parameter, which overrides @noSelfInFile for that method -> emitted as `dict:get(k)`.
// `ngx` is declared as a const of an interface type (not a namespace) because `var` and `null`
// are reserved words that cannot be namespace members but are fine as interface property names.
//

type NgxLogLevel = number & { readonly __ngxLogLevel: never };
/** light userdata NULL (ngx.null / cjson.null) — TRUTHY in Lua */
type NgxNull = { readonly __ngxNull: never };

/** Values a shared dict can store. */
type ShdictValue = string | number | boolean;

interface NgxSharedDict {
    /** value, flags  (or nil, err) */
    get(this: NgxSharedDict, key: string): LuaMultiReturn<[ShdictValue | undefined, number | string | undefined]>;
    get_stale(this: NgxSharedDict, key: string): LuaMultiReturn<[ShdictValue | undefined, number | undefined, boolean]>;
    /** ok, err, forcible */
    set(this: NgxSharedDict, key: string, value: ShdictValue | undefined, exptime?: number, flags?: number): LuaMultiReturn<[boolean, string | undefined, boolean]>;
    safe_set(this: NgxSharedDict, key: string, value: ShdictValue | undefined, exptime?: number, flags?: number): LuaMultiReturn<[boolean, string | undefined]>;
    /** err === "exists" when the key is already there */
    add(this: NgxSharedDict, key: string, value: ShdictValue, exptime?: number, flags?: number): LuaMultiReturn<[boolean, string | undefined, boolean]>;
    safe_add(this: NgxSharedDict, key: string, value: ShdictValue, exptime?: number, flags?: number): LuaMultiReturn<[boolean, string | undefined]>;
    replace(this: NgxSharedDict, key: string, value: ShdictValue, exptime?: number, flags?: number): LuaMultiReturn<[boolean, string | undefined, boolean]>;
    delete(this: NgxSharedDict, key: string): void;
    /** newval, err, forcible */
    incr(this: NgxSharedDict, key: string, value: number, init?: number, init_ttl?: number): LuaMultiReturn<[number | undefined, string | undefined, boolean]>;
    lpush(this: NgxSharedDict, key: string, value: string | number): LuaMultiReturn<[number | undefined, string | undefined]>;
    rpush(this: NgxSharedDict, key: string, value: string | number): LuaMultiReturn<[number | undefined, string | undefined]>;
    lpop(this: NgxSharedDict, key: string): LuaMultiReturn<[string | number | undefined, string | undefined]>;
    rpop(this: NgxSharedDict, key: string): LuaMultiReturn<[string | number | undefined, string | undefined]>;
    llen(this: NgxSharedDict, key: string): LuaMultiReturn<[number | undefined, string | undefined]>;
    ttl(this: NgxSharedDict, key: string): LuaMultiReturn<[number | undefined, string | undefined]>;
    expire(this: NgxSharedDict, key: string, exptime: number): LuaMultiReturn<[boolean, string | undefined]>;
    flush_all(this: NgxSharedDict): void;
    flush_expired(this: NgxSharedDict, max_count?: number): number;
    /** A Lua sequence (1-based): TSTL's arr[0] -> arr[1] makes it a normal TS array. Default max 1024; 0 = all. */
    get_keys(this: NgxSharedDict, max_count?: number): string[];
    capacity(this: NgxSharedDict): number;
    free_space(this: NgxSharedDict): number;
}

/** Timer callbacks receive `premature` first; `this: void` so TSTL never inserts a self param. */
type NgxTimerCallback<A extends any[]> = (this: void, premature: boolean, ...args: A) => void;

/** @noSelf */
interface NgxReq {
    /** the request's start time in seconds (ms resolution) */
    start_time(): number;
    get_method(): string;
    get_uri_args(max?: number): LuaMultiReturn<[{ [k: string]: string | string[] | boolean }, string | undefined]>;
    get_headers(max?: number): { [k: string]: string | string[] };
    read_body(): void;
    get_body_data(max_bytes?: number): string | undefined;
    get_body_file(): string | undefined;
    http_version(): number | undefined;
    discard_body(): void;
    clear_header(name: string): void;
    get_headers_raw?: never;
    set_header(name: string, value: string | string[] | undefined): void;
}

/** @noSelf */
interface NgxTimer {
    at<A extends any[]>(delay: number, callback: NgxTimerCallback<A>, ...args: A): LuaMultiReturn<[true | undefined, string | undefined]>;
    every<A extends any[]>(delay: number, callback: NgxTimerCallback<A>, ...args: A): LuaMultiReturn<[true | undefined, string | undefined]>;
    running_count(): number;
    pending_count(): number;
}

/** @noSelf */
interface NgxWorker {
    id(): number;
    pid(): number;
    count(): number;
    exiting(): boolean;
}

/** @noSelf */
interface NgxRe {
    /** from, to (1-based) or nil, or (nil, nil, err) */
    find(subject: string, regex: string, options?: string, ctx?: unknown, nth?: number): LuaMultiReturn<[number | undefined, number | undefined, string | undefined]>;
    match(subject: string, regex: string, options?: string): LuaMultiReturn<[LuaTable<number | string, string | false> | undefined, string | undefined]>;
    gsub(subject: string, regex: string, replace: string, options?: string): LuaMultiReturn<[string | undefined, number, string | undefined]>;
}

/** @noSelf */
interface NgxConfig {
    readonly subsystem: string;
    readonly debug: boolean;
    readonly ngx_lua_version: number;
    readonly nginx_version: number;
    prefix(): string;
    nginx_configure(): string;
}

/** cosocket (TCP). Methods are colon-called. */
interface NgxTcpSocket {
    connect(this: NgxTcpSocket, host: string, port?: number, opts?: object): LuaMultiReturn<[1 | undefined, string | undefined]>;
    send(this: NgxTcpSocket, data: string): LuaMultiReturn<[number | undefined, string | undefined]>;
    receive(this: NgxTcpSocket, pattern?: string | number): LuaMultiReturn<[string | undefined, string | undefined, string | undefined]>;
    /** whatever is available, up to max bytes (waits for at least one); a timeout consumes nothing */
    receiveany(this: NgxTcpSocket, max: number): LuaMultiReturn<[string | undefined, string | undefined]>;
    /** how many times this connection came from the keepalive pool (0: a new connection) */
    getreusedtimes(this: NgxTcpSocket): LuaMultiReturn<[number | undefined, string | undefined]>;
    settimeout(this: NgxTcpSocket, ms: number): void;
    settimeouts(this: NgxTcpSocket, connect: number, send: number, read: number): void;
    close(this: NgxTcpSocket): LuaMultiReturn<[1 | undefined, string | undefined]>;
    setkeepalive(this: NgxTcpSocket, timeout?: number, size?: number): LuaMultiReturn<[1 | undefined, string | undefined]>;
    sslhandshake(this: NgxTcpSocket, reused?: unknown, serverName?: string, verify?: boolean): LuaMultiReturn<[unknown, string | undefined]>;
}

/** A light thread (ngx.thread.spawn). */
type NgxThread = { readonly __ngxThread: never };

/** @noSelf */
interface NgxThreadApi {
    spawn<A extends any[]>(fn: (this: void, ...args: A) => unknown, ...args: A): NgxThread;
    /** ok, results... of the first of these threads to finish */
    wait(...threads: NgxThread[]): LuaMultiReturn<[boolean, ...unknown[]]>;
    /** ok, err: only the parent may kill; a thread blocked on a cosocket is killed with its pending I/O */
    kill(t: NgxThread): LuaMultiReturn<[true | undefined, string | undefined]>;
}

/** @noSelf */
interface NgxSocket {
    tcp(): NgxTcpSocket;
}

/** @noSelf */
interface Ngx {
    readonly OK: 0;
    readonly ERROR: -1;
    readonly AGAIN: -2;
    readonly DONE: -4;
    readonly DECLINED: -5;
    readonly HTTP_GET: number;
    readonly HTTP_POST: number;
    readonly HTTP_OK: 200;
    readonly HTTP_CREATED: 201;
    readonly HTTP_NO_CONTENT: 204;
    readonly HTTP_BAD_REQUEST: 400;
    readonly HTTP_NOT_FOUND: 404;
    readonly HTTP_NOT_ALLOWED: 405;
    readonly HTTP_INTERNAL_SERVER_ERROR: 500;
    readonly HTTP_BAD_GATEWAY: 502;
    readonly HTTP_SERVICE_UNAVAILABLE: 503;
    readonly STDERR: NgxLogLevel;
    readonly EMERG: NgxLogLevel;
    readonly ALERT: NgxLogLevel;
    readonly CRIT: NgxLogLevel;
    readonly ERR: NgxLogLevel;
    readonly WARN: NgxLogLevel;
    readonly NOTICE: NgxLogLevel;
    readonly INFO: NgxLogLevel;
    readonly DEBUG: NgxLogLevel;
    readonly null: NgxNull;

    say(...args: (string | number | boolean)[]): LuaMultiReturn<[1 | undefined, string | undefined]>;
    print(...args: (string | number | boolean)[]): LuaMultiReturn<[1 | undefined, string | undefined]>;
    /** Write as `return ngx.exit(x)`: in rewrite/access/content phases it yields and does not return. */
    exit(status: number): void;
    log(level: NgxLogLevel, ...args: any[]): void;
    flush(wait?: boolean): void;
    send_headers(): LuaMultiReturn<[1 | undefined, string | undefined]>;
    /** yields: not allowed in init_worker, set_by, header/body_filter, log, balancer phases */
    sleep(seconds: number): void;
    now(): number;
    time(): number;
    update_time(): void;
    get_phase(): string;
    md5(s: string): string;
    /** binary HMAC-SHA1 digest (20 bytes) */
    hmac_sha1(key: string, data: string): string;
    crc32_short(s: string): number;
    crc32_long(s: string): number;
    escape_uri(s: string): string;
    unescape_uri(s: string): string;
    localtime(): string;
    worker_count?: never;
    encode_base64(s: string, no_padding?: boolean): string;
    decode_base64(s: string): string | undefined;

    /** settable before headers are sent: `ngx.status = 201` */
    status: number;
    readonly header: { [name: string]: string | string[] | undefined };
    /** nginx variables ($uri -> ngx.var.uri). Unset => nil; undefined variable => error on write. */
    readonly var: { [name: string]: string | undefined };
    /** per-request table */
    ctx: { [key: string]: any };
    readonly shared: { [dict: string]: NgxSharedDict | undefined };
    readonly req: NgxReq;
    readonly timer: NgxTimer;
    readonly worker: NgxWorker;
    readonly re: NgxRe;
    readonly config: NgxConfig;
    readonly socket: NgxSocket;
    readonly thread: NgxThreadApi;
    readonly HTTP_CONFLICT: 409;
    readonly HTTP_REQUEST_ENTITY_TOO_LARGE: 413;
    readonly HTTP_PRECONDITION_FAILED: 412;
    readonly HTTP_HEAD: number;
    readonly HTTP_DELETE: number;
    readonly HTTP_PUT: number;
}

declare const ngx: Ngx;
