/** @noSelfInFile */
// DNS state for GET /status. Replaced by the re-resolution work (dns/refresh).
export function dnsStatus(): unknown {
    return [];
}
