// Debian's Chromium, headless, driven by puppeteer-core (pinned in package.json; never a browser download):
// the flags of the dashboard suite and a fresh profile per launch, removed by close().
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import puppeteer from "puppeteer-core";

export const CHROMIUM = "/usr/bin/chromium";
export const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
  "--disable-sync", "--no-first-run"];

export async function launchChromium() {
  const profile = mkdtempSync(path.join(tmpdir(), "dyups-chromium-"));
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM, headless: true, userDataDir: profile, args: [...FLAGS, `--user-data-dir=${profile}`],
    defaultViewport: { width: 1280, height: 760 },
  });
  const pid = browser.process()?.pid;
  return {
    browser,
    async close() {
      try { await browser.close(); } catch { try { if (pid) process.kill(pid, "SIGKILL"); } catch {} }
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
