local m = require("dyups.model"); describe("x", function() it("loads", function() assert.truthy(m) end) end)
