/** @noSelfInFile */
// File operations for the state file, written as a database writes its files: a temp file in the same
// folder, written whole, fsync'ed, renamed over the old file, then the folder fsync'ed, so that a crash or a
// power cut leaves either the old file or the new one, complete. Files kept aside (a corrupt state file, a
// copy of one whose records did not all load) get a name no other keep-aside can take: time to the
// millisecond, pid and a sequence number, created with O_EXCL or link() (both fail rather than overwrite).
// LuaJIT FFI on libc (Linux; the O_* values below are the same on x86_64 and arm64).
// Phases: timers and init (blocking syscalls: never on the request path). Errors are returned (Result).
import * as ffi from "ffi";
import type { Result } from "../errors";

// pcall: another module may have declared some of these already (a redefinition raises)
pcall(ffi.cdef, "int open(const char *pathname, int flags, int mode);");
pcall(ffi.cdef, "int close(int fd);");
pcall(ffi.cdef, "long write(int fd, const void *buf, unsigned long count);");
pcall(ffi.cdef, "int fsync(int fd);");
pcall(ffi.cdef, "int rename(const char *oldpath, const char *newpath);");
pcall(ffi.cdef, "int link(const char *oldpath, const char *newpath);");
pcall(ffi.cdef, "int unlink(const char *pathname);");
pcall(ffi.cdef, "int access(const char *pathname, int mode);");
pcall(ffi.cdef, "char *strerror(int errnum);");

interface LibC {
    open(this: void, path: string, flags: number, mode: number): number;
    close(this: void, fd: number): number;
    write(this: void, fd: number, buf: unknown, n: number): number;
    fsync(this: void, fd: number): number;
    rename(this: void, from: string, to: string): number;
    link(this: void, from: string, to: string): number;
    unlink(this: void, path: string): number;
    access(this: void, path: string, mode: number): number;
    strerror(this: void, errnum: number): unknown;
}
const C = ffi.C as LibC;

const O_RDONLY = 0;
const O_WRONLY = 1;
const O_CREAT = 0x40;
const O_EXCL = 0x80;
const O_TRUNC = 0x200;
const W_OK = 2;
const EINTR = 4;
const EEXIST = 17;

function lastError(): string {
    return ffi.string(C.strerror(ffi.errno()));
}

/** The folder of PATH ("." for a bare name). */
export function folderOf(path: string): string {
    const [dir] = string.match(path, "^(.*)/[^/]*$");
    if (dir === undefined) return ".";
    return dir === "" ? "/" : dir;
}

/** true when this process may create files in PATH's folder. */
export function folderWritable(path: string): boolean {
    return C.access(folderOf(path), W_OK) === 0;
}

/** An open file being written (see openTemp / writeAll / commitTemp / abandon). */
export interface OpenFile {
    fd: number;
    tmp: string;
    path: string;
    bytes: number;
}

/** Creates PATH's temp file (same folder, so the rename is atomic). */
export function openTemp(path: string): Result<OpenFile> {
    const tmp = `${path}.tmp.${ngx.worker.pid()}`;
    const fd = C.open(tmp, O_WRONLY + O_CREAT + O_TRUNC, 420); // 0644
    if (fd < 0) return $multi(undefined, `cannot create ${tmp}: ${lastError()}`);
    return $multi({ fd, tmp, path, bytes: 0 }, undefined);
}

function writeFd(fd: number, text: string): string | undefined {
    const buf = ffi.cast("const char *", text) as number;
    let off = 0;
    const n = text.length;
    while (off < n) {
        const w = C.write(fd, buf + off, n - off);
        if (w < 0) {
            if (ffi.errno() !== EINTR) return lastError();
        } else {
            off = off + w;
        }
    }
    return undefined;
}

/** Appends TEXT to the file. */
export function writeAll(f: OpenFile, text: string): Result<true> {
    const err = writeFd(f.fd, text);
    if (err !== undefined) return $multi(undefined, `cannot write ${f.tmp}: ${err}`);
    f.bytes = f.bytes + text.length;
    return $multi(true, undefined);
}

/** Gives up on the file: closes and removes the temp file. */
export function abandon(f: OpenFile): void {
    C.close(f.fd);
    C.unlink(f.tmp);
}

function fsyncFolder(path: string): string | undefined {
    const dfd = C.open(folderOf(path), O_RDONLY, 0);
    if (dfd < 0) return lastError();
    const r = C.fsync(dfd);
    const err = r !== 0 ? lastError() : undefined;
    C.close(dfd);
    return err;
}

/** fsync, close, rename over the target, fsync the folder. On failure the target is untouched. */
export function commitTemp(f: OpenFile): Result<true> {
    if (C.fsync(f.fd) !== 0) {
        const err = lastError();
        abandon(f);
        return $multi(undefined, `cannot fsync ${f.tmp}: ${err}`);
    }
    if (C.close(f.fd) !== 0) {
        const err = lastError();
        C.unlink(f.tmp);
        return $multi(undefined, `cannot close ${f.tmp}: ${err}`);
    }
    if (C.rename(f.tmp, f.path) !== 0) {
        const err = lastError();
        C.unlink(f.tmp);
        return $multi(undefined, `cannot rename ${f.tmp} to ${f.path}: ${err}`);
    }
    const derr = fsyncFolder(f.path);
    if (derr !== undefined) return $multi(undefined, `cannot fsync the folder of ${f.path}: ${derr}`);
    return $multi(true, undefined);
}

let seq = 0;

/** A name beside PATH that no earlier keep-aside took: PATH.TAG-<UTC time to the ms>-<pid>-<seq>. */
function asideName(path: string, tag: string): string {
    seq = seq + 1;
    const now = ngx.now();
    const ms = math.floor((now - math.floor(now)) * 1000);
    return `${path}.${tag}-${os.date("!%Y%m%dT%H%M%S", math.floor(now))}.${string.format("%03d", ms)}-${ngx.worker.pid()}-${seq}`;
}

/**
 * Moves PATH aside without overwriting anything: link to a fresh name (fails if it exists: try the next),
 * then unlink PATH. Returns the new name.
 */
export function moveAside(path: string, tag: string): Result<string> {
    for (let i = 1; i <= 100; i++) {
        const to = asideName(path, tag);
        if (C.link(path, to) === 0) {
            C.unlink(path);
            fsyncFolder(path);
            return $multi(to, undefined);
        }
        const errno = ffi.errno();
        if (errno !== EEXIST) {
            // no hard links here (some file systems): a rename, after making sure the name is free
            const probe = C.open(to, O_RDONLY, 0);
            if (probe >= 0) {
                C.close(probe);
            } else if (C.rename(path, to) === 0) {
                fsyncFolder(path);
                return $multi(to, undefined);
            } else {
                return $multi(undefined, `cannot move ${path} aside: ${lastError()}`);
            }
        }
    }
    return $multi(undefined, `cannot move ${path} aside: no free name`);
}

/** Writes TEXT to a fresh file beside PATH (O_EXCL: never overwrites), fsync'ed. Returns its name. */
export function copyAside(path: string, tag: string, text: string): Result<string> {
    for (let i = 1; i <= 100; i++) {
        const to = asideName(path, tag);
        const fd = C.open(to, O_WRONLY + O_CREAT + O_EXCL, 420);
        if (fd >= 0) {
            const err = writeFd(fd, text);
            const synced = C.fsync(fd) === 0;
            C.close(fd);
            if (err !== undefined || !synced) return $multi(undefined, `cannot write ${to}: ${err ?? lastError()}`);
            fsyncFolder(path);
            return $multi(to, undefined);
        }
        if (ffi.errno() !== EEXIST) return $multi(undefined, `cannot create ${to}: ${lastError()}`);
    }
    return $multi(undefined, `cannot copy ${path} aside: no free name`);
}

/**
 * The whole content of PATH: [text], [undefined, undefined] when there is no such file, or
 * [undefined, reason] when it exists but cannot be read (a folder, no permission).
 */
export function readWhole(path: string): LuaMultiReturn<[string, undefined] | [undefined, string | undefined]> {
    const [f, oerr] = io.open(path, "rb");
    if (f === undefined) {
        if (C.access(path, 0) !== 0) return $multi(undefined, undefined);
        return $multi(undefined, `cannot open ${path}: ${oerr}`);
    }
    const text = f.read("*a") as string | undefined;
    const rerr = text === undefined ? lastError() : undefined;
    f.close();
    if (text === undefined) return $multi(undefined, `cannot read ${path}: ${rerr}`);
    return $multi(text, undefined);
}
