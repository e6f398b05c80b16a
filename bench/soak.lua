-- wrk script for the soak: post.lua plus a per-thread request limit ("limit=N").
-- Each thread stops itself after N responses, so the run is bounded by count (and by -d).
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "post.lua")

local post_init = init
local limit = 0
local count = 0

function init(args)
  post_init(args)
  for _, arg in ipairs(args) do
    local n = arg:match("^limit=(%d+)$")
    if n then
      limit = tonumber(n)
    end
  end
end

function response(status, headers, body)
  count = count + 1
  if limit > 0 and count >= limit then
    wrk.thread:stop()
  end
end
