/** @noSelfInFile */
// The nginx configuration tokenizer, with ngx_conf_read_token's rules, so that a body means here what it would
// mean in nginx.conf. Pure Lua: no ngx.*; runs in the content phase (admin requests), in init (the upstream
// file) and under plain LuaJIT in specs. Cost: O(length of the text), one substring per token.
//
// The rules, all from ngx_conf_file.c:
//   - blanks are space, tab, CR and LF; lines are counted at LF;
//   - `;` and `{` end a word, `}` does not: `a}` is one word, and `}` is a separator only at a token start;
//   - `#` starts a comment only at a token start (`a#b` is a word), up to the end of the line;
//   - `"` and `'` start a quoted token only at a token start; a quoted token may hold newlines and must be
//     followed by a blank, `;`, `{` or `)`, else `unexpected "x"`;
//   - `\` escapes the next byte (it neither ends a word nor closes a quote); once a token is complete,
//     \" \' \\ \t \r \n are replaced and every other escape is kept as written (`\;` stays `\;`);
//   - `${` inside a word keeps the `{` (variables like `${host}`).
// Directive-level rules (readDirective): `;` or `{` with no word before them, `}` after words, and the end of
// the text after words are errors, like nginx's.

import { Result } from "../model";

export type TokenKind = "word" | ";" | "{" | "}" | "eof";

/** Scanner state. One per text; the fields of the last token are overwritten by each nextToken call. */
export interface Lexer {
    readonly text: string;
    readonly len: number;
    /** next byte to read (1-based) */
    pos: number;
    /** current line (1-based, counted at LF) */
    line: number;
    /** set after a quoted token: the next byte must be a blank, `;`, `{` or `)` */
    needSpace: boolean;
    /** the last token */
    kind: TokenKind;
    /** the last word, unquoted and unescaped ("" for separators) */
    value: string;
    /** line where the last token starts */
    tokLine: number;
    /** byte offsets of the last token, inclusive (quotes included); for "eof", tokStart = len + 1 */
    tokStart: number;
    tokEnd: number;
    /** the line an error refers to (valid after a call returned an error) */
    errLine: number;
    /** readDirective: the words of the last directive (0-based), their lines, their count, its first line */
    args: string[];
    argLines: number[];
    nargs: number;
    dirLine: number;
}

/** A token, as listed by tokenize() (specs and tools; the parsers use nextToken/readDirective). */
export interface Token {
    kind: TokenKind;
    value: string;
    line: number;
}

const byte = string.byte;
const sub = string.sub;
const find = string.find;
const gsub = string.gsub;
const format = string.format;

const C_TAB = 9;
const C_LF = 10;
const C_CR = 13;
const C_SPACE = 32;
const C_DQUOTE = 34;
const C_DOLLAR = 36;
const C_SQUOTE = 39;
const C_RPAREN = 41;
const C_SEMI = 59;
const C_BACKSLASH = 92;
const C_LBRACE = 123;
const C_RBRACE = 125;

/** The bytes that can end a bare word or change how it is scanned (Lua pattern set). */
const WORD_SPECIAL = "[ \t\r\n;{\\$]";
const DQUOTED_SPECIAL = '["\\\n]';
const SQUOTED_SPECIAL = "['\\\n]";

/** nginx's escapes; any other `\x` is kept as written (gsub keeps a match whose lookup is nil). */
const UNESCAPE: Record<string, string> = { '"': '"', "'": "'", "\\": "\\", t: "\t", r: "\r", n: "\n" };

/** The longest user text quoted in an error message. */
const QUOTE_MAX = 64;

function hexByte(c: string): string {
    return format("\\x%02x", byte(c));
}

/**
 * Quotes user text for an error message: `"value"`, control bytes as \xNN (an error ends up in an HTTP body
 * and in error.log, one line each), cut at 64 bytes with "..." appended.
 */
export function quote(s: string): string {
    if (s.length > QUOTE_MAX) {
        s = sub(s, 1, QUOTE_MAX) + "...";
    }
    if (find(s, "%c")[0] !== undefined) {
        s = gsub(s, "%c", hexByte)[0];
    }
    return '"' + s + '"';
}

/** A new scanner over `text` from byte `pos` (default 1), counting lines from `line` (default 1). */
export function newLexer(text: string, pos?: number, line?: number): Lexer {
    return {
        text: text,
        len: text.length,
        pos: pos ?? 1,
        line: line ?? 1,
        needSpace: false,
        kind: "eof",
        value: "",
        tokLine: line ?? 1,
        tokStart: 0,
        tokEnd: 0,
        errLine: 0,
        args: [],
        argLines: [],
        nargs: 0,
        dirLine: 0,
    };
}

function fail(lx: Lexer, line: number, reason: string): Result<TokenKind> {
    lx.errLine = line;
    return $multi(undefined, reason);
}

function punct(lx: Lexer, kind: TokenKind, pos: number): Result<TokenKind> {
    lx.kind = kind;
    lx.value = "";
    lx.tokStart = pos;
    lx.tokEnd = pos;
    lx.pos = pos + 1;
    return $multi(kind, undefined);
}

/**
 * Scans the next token: its kind is returned and its text/position are left in lx. Errors (returned, with
 * lx.errLine): a quoted token not followed by a blank, `;`, `{` or `)`; an unterminated quoted string.
 * Never raises.
 */
export function nextToken(lx: Lexer): Result<TokenKind> {
    const text = lx.text;
    const len = lx.len;
    let pos = lx.pos;
    let line = lx.line;

    if (lx.needSpace) {
        lx.needSpace = false;
        if (pos <= len) {
            const c = byte(text, pos);
            if (
                c !== C_SPACE && c !== C_TAB && c !== C_LF && c !== C_CR &&
                c !== C_SEMI && c !== C_LBRACE && c !== C_RPAREN
            ) {
                return fail(lx, line, "unexpected " + quote(sub(text, pos, pos)));
            }
        }
    }

    // blanks and comments
    while (pos <= len) {
        const c = byte(text, pos);
        if (c === C_LF) {
            line++;
            pos++;
        } else if (c === C_SPACE || c === C_TAB || c === C_CR) {
            pos++;
        } else if (c === 35 /* # */) {
            const nl = find(text, "\n", pos, true)[0];
            pos = nl === undefined ? len + 1 : nl; // the LF itself is counted by the next turn
        } else {
            break;
        }
    }
    lx.line = line;
    lx.tokLine = line;

    if (pos > len) {
        lx.pos = pos;
        lx.kind = "eof";
        lx.value = "";
        lx.tokStart = len + 1;
        lx.tokEnd = len + 1;
        return $multi("eof", undefined);
    }

    const c = byte(text, pos);
    if (c === C_SEMI) return punct(lx, ";", pos);
    if (c === C_LBRACE) return punct(lx, "{", pos);
    if (c === C_RBRACE) return punct(lx, "}", pos);

    let escaped = false;
    let value: string;
    let last: number; // last byte of the token

    if (c === C_DQUOTE || c === C_SQUOTE) {
        const special = c === C_DQUOTE ? DQUOTED_SPECIAL : SQUOTED_SPECIAL;
        let p = pos + 1;
        while (true) {
            const q = find(text, special, p)[0];
            if (q === undefined) {
                return fail(lx, lx.tokLine, "unterminated quoted string");
            }
            const d = byte(text, q);
            if (d === C_LF) {
                line++;
                p = q + 1;
            } else if (d === C_BACKSLASH) {
                escaped = true;
                if (byte(text, q + 1) === C_LF) line++;
                p = q + 2;
            } else {
                p = q; // the closing quote
                break;
            }
        }
        value = sub(text, pos + 1, p - 1);
        last = p;
        lx.needSpace = true;
    } else {
        let p = pos;
        while (true) {
            const q = find(text, WORD_SPECIAL, p)[0];
            if (q === undefined) {
                p = len + 1;
                break;
            }
            const d = byte(text, q);
            if (d === C_BACKSLASH) {
                escaped = true;
                if (byte(text, q + 1) === C_LF) line++;
                p = q + 2;
            } else if (d === C_DOLLAR) {
                p = byte(text, q + 1) === C_LBRACE ? q + 2 : q + 1;
            } else {
                p = q; // a blank, `;` or `{`: not part of the word
                break;
            }
        }
        if (p > len + 1) p = len + 1; // a backslash as the very last byte
        value = sub(text, pos, p - 1);
        last = p - 1;
    }

    if (escaped) {
        value = gsub(value, "\\(.)", UNESCAPE)[0];
    }
    lx.kind = "word";
    lx.value = value;
    lx.tokStart = pos;
    lx.tokEnd = last;
    lx.pos = last + 1;
    lx.line = line;
    return $multi("word", undefined);
}

/**
 * Reads one directive: its words go to lx.args[0..nargs-1] (lines in lx.argLines, first line in lx.dirLine),
 * and the returned kind says how it ended: ";" or "{" (nargs >= 1), "}" or "eof" (nargs == 0; for "}",
 * lx.tokStart is its offset). Errors, like nginx's: `unexpected ";"` / `unexpected "{"` before any word,
 * `unexpected "}"` after words, `unexpected end of file, expecting ";" or "}"` after words, and the
 * tokenizer's own. The line of an error is lx.errLine. Never raises.
 */
export function readDirective(lx: Lexer): Result<TokenKind> {
    const args = lx.args;
    const lines = lx.argLines;
    let n = 0;
    while (true) {
        const [kind, err] = nextToken(lx);
        if (kind === undefined) {
            lx.nargs = n;
            return $multi(undefined, err as string);
        }
        if (kind === "word") {
            if (n === 0) lx.dirLine = lx.tokLine;
            args[n] = lx.value;
            lines[n] = lx.tokLine;
            n++;
            continue;
        }
        lx.nargs = n;
        if (kind === ";" || kind === "{") {
            if (n === 0) {
                lx.dirLine = lx.tokLine;
                return fail(lx, lx.tokLine, 'unexpected "' + kind + '"');
            }
            return $multi(kind, undefined);
        }
        if (kind === "}") {
            if (n !== 0) return fail(lx, lx.tokLine, 'unexpected "}"');
            lx.dirLine = lx.tokLine;
            return $multi(kind, undefined);
        }
        // eof
        if (n !== 0) return fail(lx, lx.tokLine, 'unexpected end of file, expecting ";" or "}"');
        lx.dirLine = lx.tokLine;
        return $multi(kind, undefined);
    }
}

/**
 * All tokens of `text` up to and including "eof", or the first tokenizer error as "reason at line N".
 * For specs and tools; it does not apply the directive rules of readDirective.
 */
export function tokenize(text: string): Result<Token[]> {
    const lx = newLexer(text);
    const out: Token[] = [];
    let n = 0;
    while (true) {
        const [kind, err] = nextToken(lx);
        if (kind === undefined) {
            return $multi(undefined, (err as string) + " at line " + lx.errLine);
        }
        out[n] = { kind: kind, value: lx.value, line: lx.tokLine };
        n++;
        if (kind === "eof") return $multi(out, undefined);
    }
}
