/** @noSelfInFile */
// Re-resolution of hostnames by TTL (timer phase). See dyups.dns.resolve for the first resolution.
export function dnsTick(): void {
    // filled by the DNS re-resolution work
}
