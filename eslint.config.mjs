// The lint forbids what compiles badly with TypeScriptToLua (STYLE.md §9): exceptions (TSTL turns them into
// closures, pcall wrappers and error objects), for..in, double casts that hide a type error, truthiness
// tests where Lua and JavaScript disagree (0 and "" are true in Lua), and globals that pull in TSTL's
// emulations (Map, Set, parseInt, JSON). Run by `make lint` and by `make test` before the specs.
import tseslint from "typescript-eslint";

const restricted = [
    { selector: "ThrowStatement", message: "No throw: return `nil, reason` (errors.ts), or error(msg, 2) for a caller's bug." },
    { selector: "TryStatement", message: "No try: TSTL compiles it to closures and pcall; use pcall at timer and entry boundaries." },
    { selector: "ForInStatement", message: "No for..in: use for (const [k, v] of pairs(t))." },
    {
        selector: "TSAsExpression > TSAsExpression[typeAnnotation.type='TSUnknownKeyword']",
        message: "No `as unknown as` outside types/: type the value once (LuaTable<number, T> or 0-based array reads).",
    },
];

export default tseslint.config(
    { ignores: ["dist/**", "node_modules/**", "types/**", "spec/**", "test/**", "scripts/**", "tools/**"] },
    {
        files: ["src/**/*.ts"],
        languageOptions: {
            parser: tseslint.parser,
            parserOptions: { project: "./tsconfig.json", tsconfigRootDir: import.meta.dirname },
        },
        plugins: { "@typescript-eslint": tseslint.plugin },
        rules: {
            "no-restricted-syntax": ["error", ...restricted],
            "no-restricted-globals": ["error",
                { name: "Map", message: "TSTL emulates Map: use LuaTable / LuaMap." },
                { name: "Set", message: "TSTL emulates Set: use LuaTable<K, true> / LuaSet." },
                { name: "parseInt", message: "Use tonumber()." },
                { name: "parseFloat", message: "Use tonumber()." },
                { name: "JSON", message: "Use cjson.safe." },
            ],
            // Lua: only nil and false are false. A number or a string in a condition is a bug waiting.
            "@typescript-eslint/strict-boolean-expressions": ["error", {
                allowString: false,
                allowNumber: false,
                allowNullableObject: true,
                allowNullableBoolean: false,
                allowNullableString: false,
                allowNullableNumber: false,
                allowAny: false,
            }],
        },
    },
    {
        // store/ is the only door to the shared dict: its key catalogue and the raw handle stay inside it
        files: ["src/**/*.ts"],
        ignores: ["src/dyups/store/**"],
        rules: {
            "no-restricted-imports": ["error", { patterns: [
                { group: ["**/store/keys", "**/store/shm"],
                    message: "Only src/dyups/store/ touches the dict and its keys: add a typed operation to a store module." },
                { group: ["**/store/dict"], importNames: ["dict"],
                    message: "Only src/dyups/store/ calls dict(): add a typed operation to a store module." },
            ] }],
        },
    },
);
