/** @noSelfInFile */
// `require "ngx.dyups"`: the original module's name for the same API. It requires "dyups" by name so both
// names share one module instance (and so one registry per worker).
const dyups: unknown = require("dyups");
export = dyups;
