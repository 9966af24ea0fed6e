-- wrk script: trivial executes spread over N sessions (env SESSIONS, default 64), keep-alive.
local sessions = tonumber(os.getenv("SESSIONS") or "64")
local counter = 0
local body = '{"properties":{"codeInputType":"inline","executionType":"synchronous","code":"print(1)"}}'
request = function()
  counter = counter + 1
  local path = "/code/execute?identifier=bench-" .. (counter % sessions)
  return wrk.format("POST", path, {["Content-Type"] = "application/json"}, body)
end
response = function(status, headers, body)
  if status ~= 200 then
    io.stderr:write("status " .. status .. "\n")
  end
end
