/** @noSelfInFile */
// The check module's status page (`check_status`) in its three formats, byte for byte as the reference
// build prints it (check-behaviour.md §4), except where the reference is broken: the JSON is always valid
// (a comma only between objects, also when rows are filtered out) and names are escaped (JSON strings,
// HTML entities; the CSV field of a name holding a comma, a quote or a line break is quoted). Pure.
//
// Rows come from pageRows (health/status.ts): one per checked server address, `index` its position in the
// full list (filtered pages keep the numbers, as the module's slots); `name` the server's address, `port`
// the check's `port=` (0: unset).

export interface PageRow {
    index: number;
    upstream: string;
    name: string;
    down: boolean;
    rise: number;
    fall: number;
    type: string;
    port: number;
}

export type PageFormat = "html" | "csv" | "json";

const CONTENT_TYPES: LuaTable<string, string> = new LuaTable();
CONTENT_TYPES.set("html", "text/html");
CONTENT_TYPES.set("csv", "text/plain");
CONTENT_TYPES.set("json", "application/json");

export function contentType(format: PageFormat): string {
    return CONTENT_TYPES.get(format) as string;
}

const HTML_HEAD_1 =
    '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN\n' +
    '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">\n' +
    '<html xmlns="http://www.w3.org/1999/xhtml">\n' +
    "<head>\n" +
    "  <title>Nginx http upstream check status</title>\n" +
    "</head>\n" +
    "<body>\n" +
    "<h1>Nginx http upstream check status</h1>\n" +
    "<h2>Check upstream server number: ";
const HTML_HEAD_2 =
    "</h2>\n" +
    '<table style="background-color:white" cellspacing="0"        cellpadding="3" border="1">\n' +
    '  <tr bgcolor="#C0C0C0">\n' +
    "    <th>Index</th>\n" +
    "    <th>Upstream</th>\n" +
    "    <th>Name</th>\n" +
    "    <th>Status</th>\n" +
    "    <th>Rise counts</th>\n" +
    "    <th>Fall counts</th>\n" +
    "    <th>Check type</th>\n" +
    "    <th>Check port</th>\n" +
    "  </tr>\n";
const HTML_TAIL = "</table>\n</body>\n</html>\n";

const HTML_ESCAPES: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

function html(s: string): string {
    return string.gsub(s, "[&<>\"']", HTML_ESCAPES)[0];
}

function jsonString(s: string): string {
    const [out] = string.gsub(s, '[%c"\\]', (c: string) => {
        if (c === '"') return '\\"';
        if (c === "\\") return "\\\\";
        if (c === "\n") return "\\n";
        if (c === "\r") return "\\r";
        if (c === "\t") return "\\t";
        return string.format("\\u%04x", string.byte(c));
    });
    return `"${out}"`;
}

function csvField(s: string): string {
    if (string.find(s, '[,"\r\n]')[0] === undefined) return s;
    return `"${string.gsub(s, '"', '""')[0]}"`;
}

function status(r: PageRow): string {
    return r.down ? "down" : "up";
}

/** The page body for these rows (already filtered). generation: the configuration generation shown. */
export function renderPage(format: PageFormat, rows: PageRow[], generation: number): string {
    const out: string[] = [];
    let n = 0;
    const count = rows.length;
    if (format === "csv") {
        for (const [, r] of ipairs(rows)) {
            n = n + 1;
            out[n - 1] = `${r.index},${csvField(r.upstream)},${csvField(r.name)},${status(r)},${r.rise},${r.fall},${r.type},${r.port}\n`;
        }
        return table.concat(out);
    }
    if (format === "json") {
        n = n + 1;
        out[n - 1] = `{"servers": {\n  "total": ${count},\n  "generation": ${generation},\n  "server": [\n`;
        for (const [i, r] of ipairs(rows)) {
            n = n + 1;
            out[n - 1] = `    {"index": ${r.index}, "upstream": ${jsonString(r.upstream)}, "name": ${jsonString(r.name)}, "status": "${status(r)}", "rise": ${r.rise}, "fall": ${r.fall}, "type": "${r.type}", "port": ${r.port}}${i < count ? "," : ""}\n`;
        }
        n = n + 1;
        out[n - 1] = "  ]\n}}\n";
        return table.concat(out);
    }
    n = n + 1;
    out[n - 1] = `${HTML_HEAD_1}${count}, generation: ${generation}${HTML_HEAD_2}`;
    for (const [, r] of ipairs(rows)) {
        n = n + 1;
        out[n - 1] = `  <tr${r.down ? ' bgcolor="#FF0000"' : ""}>\n    <td>${r.index}</td>\n    <td>${html(r.upstream)}</td>\n    <td>${html(r.name)}</td>\n    <td>${status(r)}</td>\n    <td>${r.rise}</td>\n    <td>${r.fall}</td>\n    <td>${r.type}</td>\n    <td>${r.port}</td>\n  </tr>\n`;
    }
    n = n + 1;
    out[n - 1] = HTML_TAIL;
    return table.concat(out);
}

/** Rows whose status is `want` ("up" | "down"), or all rows when want is undefined. */
export function filterRows(rows: PageRow[], want: string | undefined): PageRow[] {
    if (want === undefined) return rows;
    const out: PageRow[] = [];
    const wantDown = want === "down";
    for (const [, r] of ipairs(rows)) {
        if (r.down === wantDown) out[out.length] = r;
    }
    return out;
}
