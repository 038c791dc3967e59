/** @noSelfInFile */
// The interface's read-only resources of this folder (GET, after the access gate; http/interface.ts asks):
//   /metrics    Prometheus text (exposition.ts)     /stats  JSON for the dashboard (stats.ts)
//   /dashboard  the status page (one self-contained HTML page that polls /stats every second)
// Content phase. Each catches this worker up first, so it shows the current state.
import { sync } from "../registry/sync";
import { metricsPage } from "./exposition";
import { statsPage } from "./stats";
import { HTML } from "dyups.metrics.dashboard_html";

/** The page's own policy: nothing but itself and same-origin fetches; never framed. */
const PAGE_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; " +
    "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

function dashboardPage(): void {
    ngx.status = 200;
    ngx.header["Content-Type"] = "text/html; charset=utf-8";
    ngx.header["Content-Security-Policy"] = PAGE_CSP;
    ngx.header["X-Frame-Options"] = "DENY";
    ngx.header["X-Content-Type-Options"] = "nosniff";
    ngx.header["Referrer-Policy"] = "no-referrer";
    ngx.header["Cache-Control"] = "no-cache";
    ngx.header["Content-Length"] = `${HTML.length}`;
    ngx.print(HTML);
    ngx.exit(ngx.HTTP_OK);
}

/** Serves `what` ("metrics", "stats", "dashboard") and returns true, or returns false for anything else. */
export function serveMetricsResource(what: string, role: string): boolean {
    if (what !== "metrics" && what !== "stats" && what !== "dashboard") return false;
    ngx.req.discard_body();
    sync();
    if (what === "metrics") metricsPage();
    else if (what === "stats") statsPage(role);
    else dashboardPage();
    return true;
}
