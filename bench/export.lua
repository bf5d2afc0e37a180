-- bench/export.lua -- a model's state under PyTorch's parameter names (as in
-- tests/vectors), for the safetensors files that bench/torch_bench.py reads.
--   local torch_names = dofile("bench/export.lua"); local t = torch_names(model)
return function(model)
  local t = {}
  for k, v in pairs(model:state_dict()) do
    if k == "normalize.inv_std" then t["param.normalize.std"] = v:reciprocal():reshape(1, -1, 1, 1)
    elseif k == "normalize.mean" then t["param.normalize.mean"] = v:reshape(1, -1, 1, 1)
    elseif k == "patch_embed.cls_token" then t["param.cls_token"] = v
    elseif k == "patch_embed.pos_embed" then t["param.pos_embed"] = v
    else t["param." .. k] = v end
  end
  return t
end
