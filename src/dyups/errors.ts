/** @noSelfInFile */
// The error contract, in one place. Two channels (STYLE.md §1):
//   - a caller's bug raises: error("bad argument #1 to 'update' (string expected)", 2);
//   - a failure at run time (bad input, full shm, timeout, a peer that answers garbage) is returned.
// Returned failures take one of three shapes, each with one meaning:
//   Result<T>        `value, nil` or `nil, reason`: every run-time failure that has no HTTP status of its own.
//   StatusResult<T>  `value, nil, nil` or `nil, reason, status`: the write pipeline and the store's writes,
//                    where the caller answers an HTTP client (400, 404, 409, 412, 429, 503, 507, 500).
//   Problem          `reason` or nil: the parser's directive handlers (nil = no problem).
// Reasons are lowercase and chain their cause: "cannot store the state: " + err. No throw, no try: TSTL
// turns them into closures and pcall wrappers. pcall belongs only at timer and entry boundaries.

/** A run-time outcome: `[value, undefined]` or `[undefined, reason]` (compiles to `return v` / `return nil, err`). */
export type Result<T> = LuaMultiReturn<[T, undefined] | [undefined, string]>;

/** A write's outcome: `[value, undefined, undefined]` or `[undefined, reason, httpStatus]`. */
export type StatusResult<T> = LuaMultiReturn<[T, undefined, undefined] | [undefined, string, number]>;

/** A parser problem: the reason, or undefined when the directive is fine. */
export type Problem = string | undefined;
