-- Argo CD health of an Edgewire EventBroker (edgewire.dev), from the conditions the operator sets for kstatus:
-- Stalled=True (it cannot proceed without a change: an invalid spec, a missing Secret or key, a denied
-- cloud action) is Degraded; Reconciling=True (children rolling out, provisioning) and a status.observedGeneration
-- behind metadata.generation are Progressing; Ready=True is Healthy; Ready not True while neither Reconciling nor
-- Stalled (what runs does not work, e.g. a bridge cut off from a broker) is Degraded.
local hs = {status = "Progressing", message = "Waiting for the operator to report a status"}
if obj.status == nil then
  return hs
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end
local ready, reconciling, stalled
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Ready" then
      ready = c
    elseif c.type == "Reconciling" then
      reconciling = c
    elseif c.type == "Stalled" then
      stalled = c
    end
  end
end
local function says(c)
  return (c.reason or "") .. ": " .. (c.message or "")
end
if stalled ~= nil and stalled.status == "True" then
  return {status = "Degraded", message = says(stalled)}
end
if reconciling ~= nil and reconciling.status == "True" then
  return {status = "Progressing", message = says(reconciling)}
end
if ready == nil then
  return hs
end
if ready.status == "True" then
  return {status = "Healthy", message = ready.message or ""}
end
return {status = "Degraded", message = says(ready)}
