-- Help texts: ml.doc(value, text) registers one, ml.help(value) (`help` at the
-- prompt, or `?name`) prints it. Every public function has a text; a test
-- checks ml.undocumented() is empty. Other library files register theirs with
-- ml.doc next to their code.
local ml = require "moelab"

local docs = setmetatable({}, {__mode = "k"})

function ml.doc(value, text)
  if value == nil then error("doc: no value to document", 2) end
  if type(text) ~= "string" then error("doc: text must be a string", 2) end
  docs[value] = text
  return value
end

-- Texts for the C functions, by name. Dotted names are resolved below.
local texts = {
  -- creation
  ["tensor"] = "ml.tensor(table | number | tensor, [dtype]) -> tensor\n  A tensor from a (nested) Lua table, a number (0-d) or a copy of a tensor.\n  dtype: \"float32\" (default) or \"int64\".\n  e.g. ml.tensor({{1, 2}, {3, 4}}), ml.tensor({1, 2, 3}, \"int64\")",
  ["zeros"] = "ml.zeros(d1, d2, ... | {shape}, [dtype]) -> tensor of zeros\n  e.g. ml.zeros(2, 3), ml.zeros({4}, \"int64\")",
  ["ones"] = "ml.ones(d1, d2, ... | {shape}, [dtype]) -> tensor of ones",
  ["full"] = "ml.full({shape}, value, [dtype]) -> tensor filled with value\n  e.g. ml.full({2, 2}, 0.5)",
  ["arange"] = "ml.arange(n) | ml.arange(start, stop, [step]) -> 1-d tensor [start, stop) by step\n  e.g. ml.arange(5) = 0 1 2 3 4; ml.arange(1, 2, 0.25)",
  ["eye"] = "ml.eye(n, [m]) -> n x m identity matrix",
  ["rand"] = "ml.rand(d1, d2, ... | {shape}) -> uniform [0, 1) samples (engine RNG, see ml.seed)",
  ["randn"] = "ml.randn(d1, d2, ... | {shape}) -> standard normal samples (engine RNG)",
  ["randint"] = "ml.randint([low], high, {shape}) -> int64 tensor of integers in [low, high] (inclusive, as math.random; low defaults to 1)\n  e.g. ml.randint(10, {5}), ml.randint(0, 255, {2, 2})",
  ["randperm"] = "ml.randperm(n, [{seed = s}]) -> int64 permutation of 1..n (a private generator when seeded)",
  ["seed"] = "ml.seed(n)\n  Seeds the engine's random number generator: the same seed gives the same numbers (rand, randn,\n  dropout masks, router noise, random tie-breaking, shuffling without its own seed).",
  ["zeros_like"] = "ml.zeros_like(t) -> zeros of t's shape and dtype",
  ["ones_like"] = "ml.ones_like(t) -> ones of t's shape and dtype",
  ["rand_like"] = "ml.rand_like(t) -> uniform [0, 1) samples of t's shape",
  ["randn_like"] = "ml.randn_like(t) -> standard normal samples of t's shape",
  ["cat"] = "ml.cat({t1, t2, ...}, [dim = 1]) -> concatenation along dim (differentiable)",
  ["stack"] = "ml.stack({t1, t2, ...}, [dim = 1]) -> the tensors stacked along a new dimension",
  -- queries
  ["shape"] = "t:shape() -> {d1, d2, ...} (a Lua table)",
  ["size"] = "t:size([dim]) -> the size of dimension dim (1-based), or the shape table",
  ["numel"] = "t:numel() -> number of elements",
  ["dim"] = "t:dim() -> number of dimensions",
  ["dtype"] = "t:dtype() -> \"float32\" or \"int64\"",
  ["is_contiguous"] = "t:is_contiguous() -> true when the elements are laid out densely in row-major order",
  ["item"] = "t:item() -> the value of a one-element tensor as a Lua number",
  ["totable"] = "t:totable() -> nested Lua table of the values",
  ["clone"] = "t:clone() -> a copy with its own storage (differentiable)",
  ["contiguous"] = "t:contiguous() -> t itself when dense, else a dense copy",
  ["float"] = "t:float() -> float32 version (t itself when already float32)",
  ["long"] = "t:long() -> int64 version (truncates toward zero)",
  ["copy"] = "t:copy(src) -> t, after copying src into it (src broadcasts; writes through views)\n  e.g. X:narrow(2, 5, 4):copy(b) fills columns 5..8 of X",
  ["fill"] = "t:fill(value) -> t, every element set to value (in place)",
  ["zero"] = "t:zero() -> t, filled with zeros (in place)",
  -- views
  ["reshape"] = "t:reshape(d1, d2, ... | {shape}) -> same elements in a new shape (a view when possible; one size may be -1);\n  t:view(...) is the same",
  ["flatten"] = "t:flatten([start = 1], [stop = -1]) -> dimensions start..stop merged into one",
  ["permute"] = "t:permute(d1, d2, ...) -> a view with the dimensions reordered",
  ["transpose"] = "t:transpose([d1 = 1], [d2 = 2]) -> a view with two dimensions swapped",
  ["t"] = "t:t() -> the transpose of a 2-d tensor (a view)",
  ["narrow"] = "t:narrow(dim, start, length) -> a view of positions start .. start+length-1 along dim (writes through)",
  ["select"] = "t:select(dim, i) -> the i-th slice along dim, with that dimension removed (a view); t[i] = t:select(1, i)",
  ["squeeze"] = "t:squeeze([dim]) -> size-1 dimensions removed (only dim when given)",
  ["unsqueeze"] = "t:unsqueeze(dim) -> a new size-1 dimension at dim",
  ["expand"] = "t:expand(d1, d2, ...) -> a broadcast view (size-1 dimensions repeated without copying; -1 keeps a size)",
  ["expand_as"] = "t:expand_as(other) -> t broadcast to other's shape",
  ["view_as"] = "t:view_as(other) -> t reshaped to other's shape",
  -- math
  ["add"] = "ml.add(a, b) = a + b (broadcasting; numbers allowed)",
  ["sub"] = "ml.sub(a, b) = a - b (broadcasting)",
  ["mul"] = "ml.mul(a, b) = a * b, elementwise (broadcasting)",
  ["div"] = "ml.div(a, b) = a / b, elementwise (broadcasting)",
  ["pow"] = "ml.pow(a, b) = a ^ b, elementwise; b may be a number or a tensor",
  ["neg"] = "t:neg() = -t",
  ["exp"] = "t:exp() -> e^t",
  ["log"] = "t:log() -> natural logarithm",
  ["sqrt"] = "t:sqrt() -> square root",
  ["abs"] = "t:abs() -> absolute value",
  ["sign"] = "t:sign() -> -1, 0 or 1 (the gradient is zero)",
  ["relu"] = "t:relu() -> max(t, 0)",
  ["gelu"] = "t:gelu() -> x Phi(x), the exact (erf) GELU",
  ["sigmoid"] = "t:sigmoid() -> 1 / (1 + e^-t), computed stably",
  ["tanh"] = "t:tanh() -> hyperbolic tangent",
  ["softplus"] = "t:softplus() -> log(1 + e^t) (linear above 20)",
  ["sin"] = "t:sin() -> sine",
  ["cos"] = "t:cos() -> cosine",
  ["floor"] = "t:floor() -> round down (zero gradient)",
  ["ceil"] = "t:ceil() -> round up (zero gradient)",
  ["round"] = "t:round() -> round to nearest, ties to even (zero gradient)",
  ["square"] = "t:square() -> t * t",
  ["reciprocal"] = "t:reciprocal() -> 1 / t",
  ["erf"] = "t:erf() -> the error function",
  ["log1p"] = "t:log1p() -> log(1 + t), accurate near 0",
  ["expm1"] = "t:expm1() -> e^t - 1, accurate near 0",
  ["minimum"] = "ml.minimum(a, b) -> elementwise minimum (ties share the gradient)",
  ["maximum"] = "ml.maximum(a, b) -> elementwise maximum (ties share the gradient)",
  ["clamp"] = "t:clamp([lo], [hi]) -> t limited to [lo, hi]; lo and hi may be numbers, nil or tensors\n  e.g. the l_inf projection of an attack: x_adv:clamp(x - eps, x + eps):clamp(0, 1)",
  ["where"] = "ml.where(cond, a, b) -> a where cond is non-zero, else b (broadcasting)",
  ["eq"] = "t:eq(other) -> 1.0 where equal, else 0.0 (float32 mask; no gradient)\n  e.g. accuracy = logits:argmax(2):eq(y):float():mean()",
  ["ne"] = "t:ne(other) -> 1.0 where not equal",
  ["lt"] = "t:lt(other) -> 1.0 where t < other",
  ["le"] = "t:le(other) -> 1.0 where t <= other",
  ["gt"] = "t:gt(other) -> 1.0 where t > other",
  ["ge"] = "t:ge(other) -> 1.0 where t >= other",
  ["equal"] = "ml.equal(a, b) -> true when the shapes and all values are equal",
  ["allclose"] = "ml.allclose(a, b, [rtol = 1e-5], [atol = 1e-8]) -> true when |a - b| <= atol + rtol |b| everywhere",
  -- reductions
  ["sum"] = "t:sum([dim], [keepdim]) -> sum over dim, or over everything (a 0-d tensor)",
  ["mean"] = "t:mean([dim], [keepdim]) -> mean over dim, or over everything",
  ["var"] = "t:var([dim], [{unbiased = true, keepdim = false}]) -> variance (unbiased: divides by n - 1)",
  ["std"] = "t:std([dim], [{unbiased = true, keepdim = false}]) -> standard deviation",
  ["max"] = "t:max() -> the largest value (0-d); t:max(dim, [keepdim]) -> values, indices (1-based); t:max(other) = ml.maximum",
  ["min"] = "t:min() -> the smallest value; t:min(dim, [keepdim]) -> values, indices; t:min(other) = ml.minimum",
  ["argmax"] = "t:argmax([dim], [keepdim]) -> 1-based indices of the maxima (first on ties)",
  ["argmin"] = "t:argmin([dim], [keepdim]) -> 1-based indices of the minima",
  ["norm"] = "t:norm([p = 2], [dim], [keepdim]) -> p-norm; p = 1, 2, math.huge or \"inf\", or any p > 0",
  ["logsumexp"] = "t:logsumexp([dim], [keepdim]) -> log(sum(exp(t))), computed stably",
  -- linear algebra
  ["matmul"] = "ml.matmul(a, b) -> matrix product with PyTorch's rules (vectors promoted, batch dimensions broadcast)",
  ["bmm"] = "ml.bmm(a, b) -> batched product [B, n, k] x [B, k, m] -> [B, n, m]",
  ["linear"] = "ml.linear(x, W, [b]) -> x W^T + b, with W [out, in] (one GEMM)",
  ["dot"] = "ml.dot(a, b) -> dot product of two 1-d tensors (0-d)",
  ["flops"] = "ml.flops([reset]) -> floating-point operations counted so far by GEMMs and convolutions (2 x MACs)",
  -- nn ops
  ["softmax"] = "t:softmax([dim = -1]) -> exp(t) / sum(exp(t)) along dim",
  ["attention"] = "ml.attention(qkv [B, T, 3D], heads) -> [B, T, D]: softmax(q k^T / sqrt(D/heads)) v for every head, heads\n  concatenated; qkv laid out [B, T, 3, heads, D/heads] (a fused q/k/v projection). One op, with its backward.",
  ["log_softmax"] = "t:log_softmax([dim = -1]) -> log of the softmax, computed stably",
  ["batch_norm"] = "ml.batch_norm(x, running_mean, running_var, [weight], [bias], [{training = false, momentum = 0.1, eps = 1e-5, residual = nil, relu = false}])\n  Batch normalisation over dim 2 (channels) of x [N, C, ...]; training mode uses the batch statistics\n  and updates the running ones in place (unbiased variance, as PyTorch). residual (x's shape) is added\n  after the normalisation and relu = true applies a ReLU last, in the same pass (a ResNet block's end).",
  ["layer_norm"] = "ml.layer_norm(x, n | {shape}, [weight], [bias], [{eps = 1e-5}]) -> x normalised over its last n dimensions",
  ["dropout"] = "ml.dropout(x, p, [training = true]) -> x with elements zeroed with probability p and the rest scaled by 1/(1-p)",
  ["cross_entropy"] = "ml.cross_entropy(logits, labels, [{reduction = \"mean\", label_smoothing = 0}]) -> softmax cross-entropy\n  logits [N, K], labels 1..K (int64 tensor or table); reduction \"mean\", \"sum\" or \"none\".\n  e.g. loss = ml.cross_entropy(model(x), y)",
  ["nll_loss"] = "ml.nll_loss(log_probs, labels, [{reduction = \"mean\"}]) -> negative log-likelihood",
  ["kl_div"] = "ml.kl_div(clean_logits, adv_logits, [{reduction = \"mean\"}]) -> KL(softmax(clean) || softmax(adv)) per example\n  (the TRADES term), averaged over the batch by default",
  ["mse"] = "ml.mse(a, b, [{reduction = \"mean\"}]) -> mean squared error",
  ["bce_with_logits"] = "ml.bce_with_logits(logits, targets, [{reduction = \"mean\"}]) -> sigmoid cross-entropy (multi-label), stable form",
  ["index_select"] = "t:index_select(dim, indices) -> slices of t along dim at the (1-based) indices; repeats allowed",
  ["gather"] = "t:gather(dim, index) -> out[i][j] = t[index[i][j]][j] (dim 1), PyTorch semantics, 1-based index",
  ["scatter_add"] = "t:scatter_add(dim, index, src) -> a copy of t with src added at the (1-based) index positions",
  ["one_hot"] = "ml.one_hot(labels, K) -> float [N, K] one-hot rows for labels 1..K",
  ["topk"] = "t:topk(k, [dim = -1], [{largest = true, sorted = true, random_ties = false}]) -> values, indices (1-based)\n  random_ties breaks exact ties uniformly at random (as the MoE routers do).",
  ["conv2d"] = "ml.conv2d(x, w, [b], [{stride = 1, padding = 0, dilation = 1, groups = 1}]) -> [N, O, Ho, Wo]\n  2-d convolution of x [N, C, H, W] with w [O, C/groups, kh, kw]; stride/padding/dilation may be {h, w}.\n  e.g. y = ml.conv2d(ml.rand(8, 3, 32, 32), ml.randn(16, 3, 3, 3), nil, {padding = 1})",
  ["max_pool2d"] = "x:max_pool2d(k | {kh, kw}, [{stride = k, padding = 0}]) -> max pooling of [N, C, H, W]",
  ["avg_pool2d"] = "x:avg_pool2d(k | {kh, kw}, [{stride = k, padding = 0}]) -> average pooling (padding counted in the divisor)",
  ["global_avg_pool"] = "x:global_avg_pool() -> [N, C]: the mean over H and W of [N, C, H, W]",
  -- autograd
  ["requires_grad"] = "t:requires_grad([on = true]) -> t, marked as a leaf whose gradient accumulates in t.grad\n  e.g. x = ml.randn(3):requires_grad(); (x * x):sum():backward(); print(x.grad)",
  ["needs_grad"] = "t:needs_grad() -> true when gradients flow to t (a leaf that requires grad, or computed from one)",
  ["is_leaf"] = "t:is_leaf() -> true when t was not computed by a recorded op",
  ["grad_fn"] = "t:grad_fn() -> the name of the op that computed t (nil for leaves)",
  ["backward"] = "loss:backward([grad], [{retain_graph = false}]) -> fills .grad of the leaves that require grad\n  loss must hold one value unless grad (of loss's shape) is given; the graph is freed unless retain_graph.",
  ["zero_grad"] = "t:zero_grad() -> t, its .grad dropped",
  ["detach"] = "t:detach() -> t's values without autograd history (shares storage)",
  ["grad"] = "ml.grad(output, input | {inputs}, [{grad = g, retain_graph = false}]) -> gradient(s) of output w.r.t. the inputs\n  Computes only what leads to the inputs and leaves .grad alone: what an attack needs.\n  e.g. g = ml.grad(ml.cross_entropy(model(x), y), x)",
  ["no_grad"] = "ml.no_grad(fn, ...) -> fn(...) run without recording autograd (evaluation, parameter updates)",
  ["enable_grad"] = "ml.enable_grad(fn, ...) -> fn(...) run with autograd recording on",
  ["set_grad_enabled"] = "ml.set_grad_enabled(on) -> previous state; switches autograd recording globally",
  ["is_grad_enabled"] = "ml.is_grad_enabled() -> whether ops are recorded for autograd",
  ["clip_grad_norm"] = "ml.clip_grad_norm(model | params, max_norm) -> the global gradient norm before clipping",
  -- system
  ["memory"] = "ml.memory() -> {tensors, storages, bytes, cached_bytes, peak_bytes, fresh_allocs} (after a garbage collection;\n  fresh_allocs counts the buffers the allocator's cache could not serve since the start)",
  ["memory_trim"] = "ml.memory_trim() -> returns cached buffers to the system",
  ["threads"] = "ml.threads([n]) -> number of threads (sets OpenMP and OpenBLAS when n is given)",
  ["clock"] = "ml.clock() -> monotonic time in seconds, for timing",
  ["build_info"] = "ml.build_info() -> {version, compiler, blas, blas_openmp, openmp, threads, cpus, cpu, features,\n  conv_avx512, sanitized}: the build and the machine, to keep beside a table of results (moelab -v prints it)",
  ["isatty"] = "ml.isatty([fd = 1]) -> true when the file descriptor is a terminal",
  ["repl.timing"] = "ml.repl.timing([on = true]) -> the previous setting; prints each statement's elapsed time at the prompt\n  (also :time on / :time off)",
  ["interrupted"] = "ml.interrupted() -> true when Ctrl-C was pressed during the current command",
  ["interrupt"] = "ml.interrupt() -- acts as Ctrl-C: the running command stops at its next check, unless an\n  ml.interruptible around it consumes the interrupt (a training callback can stop ml.train.fit this way)",
  ["interruptible"] = "ml.interruptible(fn, ...) -> interrupted, fn's results\n  Runs fn(...); Ctrl-C stops it and returns true instead of raising (the interrupt is consumed, so what\n  follows runs normally); a fn that saw Ctrl-C and returned its partial result gives true, then its results.\n  Other errors pass through. e.g. local stopped = ml.interruptible(train_loop)",
  -- io
  ["save"] = "ml.save(path, model, [{optimizer = opt, epoch = n, meta = {key = \"value\"}}])  (or ml.save(model, path, ...))\n  Saves the parameters, buffers and the model's constructor config as one safetensors file, atomically\n  (temporary file, fsync, rename: a killed save never leaves a partial file); with an optimizer, its state\n  too. ml.load rebuilds the model from the file alone. Format: docs/FILES.md.",
  ["load"] = "ml.load(path, [{strict = true}]) -> model, info\n  Rebuilds the model from the config in the file (no code in the file runs) and loads its tensors; the\n  model is in eval mode. info = {meta, epoch, optimizer_state, optimizer_steps, optimizer_lr}: pass\n  opt:load_state_dict(info.optimizer_state, info.optimizer_steps) to resume training. A corrupt or\n  crafted file is refused with its name and the reason; strict (default) also refuses tensors the\n  model lacks or lacks tensors of the model (strict = false loads the common ones).",
  ["io.load_safetensors"] = "ml.io.load_safetensors(path) -> {name = tensor}, {metadata}\n  Reads a safetensors file (validated; a corrupt file is refused with its name and the reason).",
  ["io.save_safetensors"] = "ml.io.save_safetensors(path, {name = tensor}, [{key = \"value\"}])\n  Writes a safetensors file atomically (temporary file, fsync, rename).",
  ["io.safetensors_header"] = "ml.io.safetensors_header(path) -> the JSON header text, its declared length",
  ["json.encode"] = "ml.json.encode(value) -> compact JSON (tables with a list part become arrays)",
  ["json.decode"] = "ml.json.decode(text) -> Lua value (null becomes nil)",
  -- data
  ["data.mnist"] = "ml.data.mnist([dir = \"data/mnist-10k\"]) -> {train = ds, test = ds}\n  MNIST IDX files (plain or .gz). Images are [1, 28, 28] in [0, 1]; labels 1..10 (digit + 1).",
  ["data.cifar10"] = "ml.data.cifar10([dir = \"data/cifar10\"]) -> {train = ds, test = ds}\n  CIFAR-10 binary batches: every data_batch_*.bin in dir, and test_batch.bin. Labels 1..10.",
  ["data.png_folder"] = "ml.data.png_folder(dir) -> ds from dir/<class>/*.png (classes sorted by name; 8-bit gray/RGB/RGBA/palette)",
  ["data.gaussian_clusters"] = "ml.data.gaussian_clusters{n = 1000, classes = 2, dim = 2, spread = 0.5, seed = 0} -> feature dataset",
  ["data.from_tensors"] = "ml.data.from_tensors(x, y, [classes]) -> dataset of x [N, D] or [N, C, H, W] with labels y (1-based)",
  -- nn
  ["nn.Linear"] = "ml.nn.Linear(in, out, [{bias = true}]) -> module computing x W^T + b (PyTorch's initialisation)",
  ["nn.ReLU"] = "ml.nn.ReLU() -> activation module",
  ["nn.GELU"] = "ml.nn.GELU() -> activation module (exact GELU)",
  ["nn.Tanh"] = "ml.nn.Tanh() -> activation module",
  ["nn.Sigmoid"] = "ml.nn.Sigmoid() -> activation module",
  ["nn.Softplus"] = "ml.nn.Softplus() -> activation module",
  ["nn.Identity"] = "ml.nn.Identity() -> module returning its input",
  ["nn.Flatten"] = "ml.nn.Flatten([start = 2], [stop = -1]) -> module flattening dimensions start..stop",
  ["nn.Normalize"] = "ml.nn.Normalize({mean per channel}, {std per channel}) -> (x - mean) / std over dim 2\n  Models normalise inside, so attacks work on pixels in [0, 1].",
  ["nn.Sequential"] = "ml.nn.Sequential(m1, m2, ...) -> container running its children in order (names 0, 1, ...)",
  ["nn.Lambda"] = "ml.nn.Lambda(fn, [name]) -> a module whose forward is the Lua function fn(x, training) -> tensor",
  ["nn.Conv2d"] = "ml.nn.Conv2d(in, out, kernel, [{stride = 1, padding = 0, groups = 1, bias = false}]) -> convolution module",
  ["nn.BatchNorm2d"] = "ml.nn.BatchNorm2d(channels, [{eps = 1e-5, momentum = 0.1}]) -> batch normalisation (running statistics in buffers)",
  ["nn.MaxPool2d"] = "ml.nn.MaxPool2d(k, [{stride = k, padding = 0}]) -> max pooling module",
  ["nn.AvgPool2d"] = "ml.nn.AvgPool2d(k, [{stride = k, padding = 0}]) -> average pooling module",
  ["nn.GlobalAvgPool"] = "ml.nn.GlobalAvgPool() -> [N, C, H, W] -> [N, C]",
  ["nn.Dropout"] = "ml.nn.Dropout([p = 0.5]) -> dropout in training mode, identity in evaluation",
  ["nn.LayerNorm"] = "ml.nn.LayerNorm(dim, [{eps = 1e-5}]) -> normalisation over the last dimension (affine)",
  ["nn.MultiHeadSelfAttention"] = "ml.nn.MultiHeadSelfAttention(dim, heads) -> softmax(q k^T / sqrt(dim/heads)) v per head on [B, T, dim]\n  children qkv (dim -> 3 dim, rows q, k, v) and proj (dim -> dim)",
  ["nn.MLP"] = "ml.nn.MLP(in, hidden, [out = in], [activation = \"gelu\"]) -> fc1 -> activation -> fc2 (the transformer MLP / V-MoE expert)",
  ["nn.TransformerBlock"] = "ml.nn.TransformerBlock(dim, heads, [{eps = 1e-6, mlp = module | hidden}]) -> pre-LN block:\n  x + attn(ln1(x)), then + mlp(ln2(x)); mlp may be a TokenMoE",
  ["nn.PatchEmbed"] = "ml.nn.PatchEmbed({C, H, W}, patch, dim) -> [B, 1 + HW/p^2, dim] tokens: p x p patches, class token, position embedding",
  ["nn.BasicBlock"] = "ml.nn.BasicBlock(in, out, [stride = 1]) -> ResNet residual block (two 3x3 conv + BN, shortcut when the shape changes)",
  ["nn.dense"] = "ml.nn.dense{backbone = \"resnet18\" | \"vgg16\" | \"wrn\" | \"cnn\", ...} -> the dense model (r = 1) of the AdvMoE family",
  ["nn.s_dense"] = "ml.nn.s_dense{backbone, ratio = 0.5, ...} -> every width scaled by ratio (same active size as MoE-CNN)",
  ["nn.sparse_cnn"] = "ml.nn.sparse_cnn{backbone, ratio = 0.5, ...} -> static structured channel masks learned from scores (HYDRA-style)",
  ["nn.moe_cnn"] = "ml.nn.moe_cnn{backbone = \"resnet18\", experts = 2, ratio = 0.5, router = \"layer\" | \"global\", ...}\n  -> MoE-CNN: every 3x3 convolution of the stages is a channel MoE (AdvMoE)",
  ["nn.from_config"] = "ml.nn.from_config(json) -> a module rebuilt from model:config() (no code is run)",
  -- optim
  ["optim.sgd"] = "ml.optim.sgd(model | params, {lr = 0.01, momentum = 0, dampening = 0, nesterov = false, weight_decay = 0})\n  -> optimizer with :step(), :zero_grad(), :lr([v]), :state_dict(), :load_state_dict(st, steps)",
  ["optim.adam"] = "ml.optim.adam(model | params, {lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 0}) -> optimizer",
  ["optim.adamw"] = "ml.optim.adamw(model | params, {lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 0.01}) -> optimizer (decoupled decay)",
  -- moe building blocks
  ["moe.route"] = "ml.moe.route(probs [T, E], {k = 2 (TokenMoE's), capacity_factor = 0 (none), round_capacity, batch_priority, random_ties = false})\n  -> {experts [T, k], kept, load, token, offsets, capacity}: top-k routing with capacity; all top-1\n  choices take slots before any top-2 choice; assignments past capacity are dropped.",
  ["moe.gather"] = "ml.moe.gather(x, ids) -> rows of x at the 1-based ids (the dispatch of tokens to experts)",
  ["moe.combine"] = "ml.moe.combine(y [A, D], w [A], ids [A], T) -> [T, D] with out[ids[a]] += w[a] y[a]",
  ["moe.mask_channels"] = "ml.moe.mask_channels(full, first, c, [gates]) -> full's shape: sample n keeps its block of c\n  channels from first[n] (1-based), scaled by gates[n]; zeros elsewhere (the mask form of channel MoE, one op)",
  ["moe.place_channels"] = "ml.moe.place_channels({parts}, {ids}, gates, N, [C, {starts}]) -> [N, C, ...]: each sample's expert\n  output placed in its expert's block of channels (channel MoE), zeros elsewhere",
  ["moe.importance_loss"] = "ml.moe.importance_loss(probs) -> CV^2 of the per-expert summed probabilities",
  ["moe.load_loss"] = "ml.moe.load_loss(logits, noisy_logits, k, sigma) -> CV^2 of the expected per-expert load (V-MoE)",
  ["moe.switch_loss"] = "ml.moe.switch_loss(probs, experts) -> E * sum_e f_e P_e (Switch/GShard balance loss)",
  ["moe.z_loss"] = "ml.moe.z_loss(logits) -> mean of logsumexp(logits)^2 (router z-loss)",
  ["moe.cv2"] = "ml.moe.cv2(v) -> (std(v) / mean(v))^2 with the population std",
  -- routing traces
  ["trace.new"] = "ml.trace.new({{layer = name, kind = \"token\", experts = [T, K] (1-based), E = n, gates, probs, logits, kept, aux}, ...})\n  -> a routing trace built by hand (for tests, or a routing to force); kind: token, smooth, channel, global",
  ["trace.load"] = "ml.trace.load(path) -> the routing trace saved by trace:save(path) (safetensors)",
  ["trace.save"] = "trace:save(path) -> trace; writes it as safetensors (expert ids 0-based in the file, as in C)",
  ["trace.get"] = "trace:get(i | \"layer\") -> the layer's table {layer, kind, T, E, K, experts (1-based), gates, probs, logits,\n  kept, load, dropped, aux}; an absent layer is an error (trace[i] and trace[\"layer\"] give nil instead)",
  ["trace.layers"] = "trace:layers() -> the MoE layer names in forward order",
  ["trace.equal"] = "trace:equal(other) -> true when both traces select the same experts with the same kept flags (also trace == other)",
  ["trace.compatible"] = "trace:compatible(other) -> trace; an error naming the first difference unless both come from the same\n  model and batch size (same layers, kinds, T, E, K)",
  ["extend"] = "ml.extend(kind, {name = fn, __tostring = fn, ...})\n  Adds methods (and metamethods such as a printer) to a kind of object: \"Module\", \"Trace\", \"Dataset\", \"Optimizer\", \"Tensor\".\n  e.g. ml.extend(\"Module\", {nparams = function(m) return (m:num_params()) end})",
  ["moe.capacity"] = "ml.moe.capacity(T, E, k, factor, [round4]) -> expert capacity ceil(k T factor / E)",
}

local function resolve(name)
  if not name:match("^[%w_]+[%w_.]*$") then return nil end
  local v = ml
  for part in name:gmatch("[^.]+") do
    if type(v) ~= "table" then return nil end
    v = rawget(v, part)
  end
  return v
end

local function resolve_texts()
  for name, text in pairs(texts) do
    local v = resolve(name)
    if v ~= nil then docs[v] = text end
  end
end
resolve_texts()

-- The methods of the library's objects. Each kind of object is reached
-- through a small instance (a new kind of object: add a line here), and its
-- methods get their texts from method_texts below or from ml.doc next to
-- their Lua code; ml.undocumented() lists any method without one.
local method_kinds = {
  {"Tensor", function() return getmetatable(ml.zeros(1)).__methods end},
  {"Module", function() return getmetatable(ml.nn.Identity()).__methods end},
  {"Dataset", function() return getmetatable(ml.data.from_tensors(ml.zeros(1, 1), ml.tensor({1}, "int64"))).__index end},
  {"Optimizer", function() return getmetatable(ml.optim.sgd({ml.zeros(1):requires_grad()}, {lr = 0.1})).__index end},
  {"Trace", function()
    local _, trace = ml.nn.TokenMoE(2, {experts = 2, k = 1}):forward(ml.zeros(1, 1, 2), {trace = true})
    return getmetatable(trace).__index
  end},
  {"Progress", function() return getmetatable(ml.progress{quiet = true}).__index end},
  {"RoutingView", function()
    return getmetatable(ml.inspect.routing(ml.trace.new{{layer = "moe", kind = "token", experts = ml.tensor({{1}}, "int64"), E = 2}})).__index
  end},
}

local method_texts = {
  Module = {
    forward = "m:forward(x, [{trace = false, aux = false, hook = fn(path, module, input, output)}]) -> y, trace, aux\n  model(x) is m:forward(x); trace (a routing trace) and aux (the routers' auxiliary loss) on request.",
    train = "m:train([on = true]) -> m: training mode (dropout, batch statistics, router noise) for m and its children",
    eval = "m:eval() -> m: evaluation mode for m and its children",
    is_training = "m:is_training() -> true in training mode",
    parameters = "m:parameters([group]) -> {name = tensor}; group \"router\" or \"backbone\" (AdvMoE trains them apart)",
    named_parameters = "m:named_parameters([group]) -> ordered list of {name, tensor, group}",
    buffers = "m:buffers() -> {name = tensor}: running statistics and other state that is not trained",
    state_dict = "m:state_dict() -> {name = tensor}: parameters and buffers (shared, not copies), what ml.save writes",
    load_state_dict = "m:load_state_dict({name = tensor}, [{strict = true}]) -> m: copies the values in (strict: every name must match)",
    zero_grad = "m:zero_grad() -> m: drops the .grad of every parameter",
    num_params = "m:num_params() -> total, active: parameter counts (active: used per input, fewer in sparse MoE models)",
    describe = "m:describe() -> one line: the module's type and settings, e.g. \"Linear(784 -> 256)\"",
    type = "m:type() -> the module's type name, e.g. \"Linear\", \"TokenMoE\", \"Model\"",
    children = "m:children() -> ordered list of {name, module}: the direct submodules",
    get = "m:get(i | \"name\" | \"a.b.c\") -> a submodule: by 1-based position (m[i] too), by name, or by a dotted path",
    add = "m:add(module) -> m: appends a child to a Sequential",
    config = "m:config() -> the JSON text that rebuilds the module with ml.nn.from_config (nil, message when it cannot)",
    modules = "m:modules() -> every module in pre-order: {path, module, depth, describe, params, active}",
    profile = "m:profile(x) -> y, {path = {flops, seconds}, total_flops}: one forward, measured per module",
    set_moe_form = "m:set_moe_form(\"sparse\" | \"mask\") -> m: how the channel-MoE convolutions compute (same results)",
    set_bn_momentum = "m:set_bn_momentum(v) -> m: the momentum of every BatchNorm2d (1: the next batch sets the statistics)",
  },
  Dataset = {
    size = "ds:size() -> number of examples (also #ds)",
    shape = "ds:shape() -> {C, H, W} of one example ({D} for feature data)",
    num_classes = "ds:num_classes() -> the number of classes K (labels are 1..K)",
    classes = "ds:classes() -> the class names, in label order",
    labels = "ds:labels() -> int64 tensor of every label (1-based)",
    batch = "ds:batch(i, n, [{augment, seed}]) -> x, y: examples i .. i+n-1 (the last batch may be shorter)",
    batches = "ds:batches(n, [{shuffle = false, seed, augment = {crop = 4, flip = true}, drop_last = false}]) -> iterator of x, y\n  e.g. for x, y in ds:batches(128, {shuffle = true, seed = 1}) do ... end (seeded: reproducible order and augmentation)",
    batch_of = "ds:batch_of(indices, [{augment, seed}]) -> x, y: the examples at the 1-based indices (tensor or table)",
    get = "ds:get(i) -> x, label: one example ([C, H, W] or [D]) and its 1-based label",
    subset = "ds:subset(from, to) | ds:subset(indices) -> a new dataset of those examples",
    stats = "ds:stats() -> {mean = {...}, std = {...}} per channel, over the pixels",
    name = "ds:name() -> the dataset's name (e.g. \"mnist/train\")",
  },
  Optimizer = {
    step = "opt:step() -> applies one update from the parameters' .grad",
    zero_grad = "opt:zero_grad() -> drops the .grad of its parameters",
    lr = "opt:lr([value]) -> the learning rate (sets it when value is given)",
    steps = "opt:steps() -> the number of updates applied so far",
    params = "opt:params() -> the list of {name, tensor} it updates",
    state_dict = "opt:state_dict() -> {[\"<name>.s1\"] = tensor, ...}, steps: the moment estimates, to save",
    load_state_dict = "opt:load_state_dict(tensors, steps) -> resumes from a state_dict (e.g. the info of ml.load)",
  },
}

local methods_resolved = false
-- Registers method_texts against the functions they describe (once, when
-- help is first asked: every library file has added its methods by then).
local function resolve_methods()
  if methods_resolved then return end
  methods_resolved = true
  resolve_texts() -- again: the host adds functions after the library loads (ml.repl.timing)
  for _, kind in ipairs(method_kinds) do
    local texts_of = method_texts[kind[1]]
    local ok, t = pcall(kind[2])
    if ok and type(t) == "table" and texts_of then
      for name, text in pairs(texts_of) do
        local f = rawget(t, name)
        if f ~= nil and not docs[f] then docs[f] = text end
      end
    end
  end
end

-- The public methods of a kind: sorted names and the table they live in.
local function methods_of(kind_name)
  for _, kind in ipairs(method_kinds) do
    if kind[1] == kind_name then
      local ok, t = pcall(kind[2])
      if not ok or type(t) ~= "table" then return {}, {} end
      local names = {}
      for k, v in pairs(t) do
        if type(k) == "string" and k:sub(1, 1) ~= "_" and type(v) == "function" then names[#names + 1] = k end
      end
      table.sort(names)
      return names, t
    end
  end
  return {}, {}
end

-- Objects are also described by topic.
local topics = {
  Tensor = [[
Tensor -- t:shape(), t:size(d), t:dim(), t:dtype(), t:item(), arithmetic + - * / ^ (broadcasting)
  t[i] the i-th slice along dimension 1 (a view; a number for 1-d); -1 is the last
  t[{i, j}] an element; t[{i}] a row; t[{{a, b}, j}] rows a..b of column j; t[{{}, j}] a column;
  the same forms assign: t[{{}, 1}] = 0, t[{2}] = ml.tensor({...}). Views write through.
  t.grad the gradient after backward. help(t.method) or ?t:method for one method.]],
  Module = [[
Module (a model or a layer) -- model(x) or model:forward(x, {trace = false, aux = false}) -> y, trace, aux
  forward options: trace_grad = true (the trace's logits/probs/gates keep their autograd history),
    routing = trace (every sparse MoE layer uses that trace's selection), force = {[layer] = e},
    silence = {[layer] = e | {e1, ...}} (expert ids 1-based), hook = fn(path, module, input, output)
  m[i] is the i-th child (1-based), m:get("layer1.0.conv1") a submodule by path; ?m:method for one method.]],
  Dataset = [[
Dataset -- #ds examples; for x, y in ds:batches(128, {shuffle = true}) do ... end; labels are 1..K
  augment = {crop = 4, flip = true}: random crop after zero padding, horizontal flip]],
  Trace = [[
Trace (what every MoE layer decided in one forward) -- y, trace = model:forward(x, {trace = true})
  trace[i] or trace["blocks.1.mlp"]  a layer: {layer, kind, T, E, K, experts (1-based) [T, K], gates [T, K],
                              probs [T, E], logits [T, E], kept [T, K], load [E], dropped, aux}
  #trace  :layers()           number of MoE layers; their names in forward order
  :get(i|name) :equal(t2)     a layer (error if absent); same selection (also t1 == t2)
  :compatible(t2) :save(path) same model and batch size (else an error); write as safetensors
  ml.trace.load(path), ml.trace.new({...}); model:forward(x, {routing = trace}) forces its selection
  A layer's table is a copy: to force an edited selection, build a trace with ml.trace.new.]],
  Optimizer = [[
Optimizer (ml.optim.sgd/adam/adamw) -- opt:zero_grad(); loss:backward(); opt:step()]],
  Progress = [[
Progress (ml.progress{...}) -- bar:update(done, [extra]), bar:step([n]), bar:finish([extra]), bar:callback()]],
}

-- A topic's text followed by its methods' first lines.
local function topic_text(name)
  local out = {topics[name]}
  local names, t = methods_of(name)
  if #names > 0 and name ~= "Tensor" then
    out[#out + 1] = "Methods:"
    for _, k in ipairs(names) do
      local text = docs[t[k]]
      out[#out + 1] = ("  %-18s %s"):format(k, text and text:match("^[^\n]*") or "(no help text)")
    end
  end
  return table.concat(out, "\n")
end

local overview = [[
moelab -- a lab bench for the adversarial robustness of Mixture-of-Experts models.

  Tensors      ml.tensor, ml.zeros, ml.randn, ... ; t:shape(), t[i], t:narrow(...), + - * / ^
  Autograd     x:requires_grad(); loss:backward(); x.grad; ml.grad(loss, x); ml.no_grad(fn)
  Ops          conv2d, max_pool2d, softmax, cross_entropy, topk, batch_norm, ... (help(ml.conv2d))
  Modules      ml.nn.Linear, ml.nn.Sequential, ... ; model(x), model:summary()     help("Module")
  Models       ml.nn.resnet18{}, ml.nn.moe_cnn{experts = 2}, ml.nn.vit{}, ml.nn.vmoe{}  help(ml.nn)
  Routing      y, trace = model:forward(x, {trace = true}); trace[layer].experts (1-based)   help("Trace")
  Data         ml.data.mnist(), ml.data.cifar10(), ds:batches(128)                  help("Dataset")
  Training     ml.train.fit(model, ds, {epochs, lr, ...}), ml.optim.sgd/adam        help("Optimizer")
  MoE          ml.moe.route, gather/combine, auxiliary losses
  Attacks      ml.attack.pgd, apgd, fab, square, autoattack, check (the doctor)    help(ml.attack)
  Metrics      ml.metrics.robustness, routing_change, routing_radius, ...; ml.results   help(ml.metrics)
  Files        ml.save(path, model), ml.load(path), ml.io.load_safetensors
  Theory       ml.theory (Lipschitz constants of MoEs)
  Plots        ml.plot.lines{x = eps, y = {moe = acc}}, hist, heatmap, grid; p:png(f)  help(ml.plot)
  Pictures     ml.image.save, load, show; ml.image.grid{clean = x, adversarial = xa}  help(ml.image)

Keys: Tab completes names (ml.nn.<Tab>), Ctrl-C interrupts a computation or clears the line,
Ctrl-D quits. A trailing ; hides the result; ?name shows help (?x:method for a method); :time on times
each statement; _ is the last result.
Indices are 1-based (dimensions, positions, labels, expert ids). Docs: README.md, docs/.]]

local function list_table(t, prefix)
  local names = {}
  for k, v in pairs(t) do
    if type(k) == "string" and k:sub(1, 1) ~= "_" and (type(v) == "function" or docs[v]) then names[#names + 1] = k end
  end
  table.sort(names)
  local out = {}
  for _, k in ipairs(names) do
    local text = docs[t[k]]
    local first = text and text:match("^[^\n]*") or "(no help text)"
    out[#out + 1] = ("  %-22s %s"):format(prefix .. k, first)
  end
  return table.concat(out, "\n")
end

-- ml.help([value | "Topic" | "Kind:method"]) prints help; returns nothing.
function ml.help(...)
  resolve_methods()
  if select("#", ...) == 0 then print(overview) return end
  local x = ...
  if x == nil then
    print("no help: the value is nil (is the name spelled right? help() for an overview)")
    return
  end
  if type(x) == "string" then
    if topics[x] then print(topic_text(x)) return end
    if x == "ml" then return ml.help(ml) end
    local kind_name, method = x:match("^(%a+):([%a_][%w_]*)$")
    if kind_name then
      local _, t = methods_of(kind_name)
      if t[method] ~= nil then return ml.help(t[method]) end
    end
    local v = resolve(x:gsub("^ml%.", ""))
    if v ~= nil then return ml.help(v) end
    print(("no help for %q (try help(), or a topic: %s)"):format(x,
      "help(\"Tensor\"), help(\"Module\"), help(\"Trace\"), help(\"Dataset\"), help(\"Optimizer\"), help(\"Module:train\")"))
    return
  end
  if docs[x] then print(docs[x]) return end
  local mt = getmetatable(x)
  local name = type(mt) == "table" and rawget(mt, "__name")
  if name == "Tensor" then
    print(("a %s tensor of shape [%s]\n%s"):format(x:dtype(), table.concat(x:shape(), ", "), topic_text("Tensor")))
  elseif name == "Module" then print(topic_text("Module"))
  elseif name == "moelab.Dataset" then print(topic_text("Dataset"))
  elseif name == "moelab.Optimizer" then print(topic_text("Optimizer"))
  elseif name == "moelab.Progress" then print(topic_text("Progress"))
  elseif name == "Trace" then print(topic_text("Trace"))
  elseif type(x) == "table" then
    local prefix = ""
    for k, v in pairs(ml) do if v == x then prefix = "ml." .. k .. "." end end
    if x == ml then prefix = "ml." end
    print(list_table(x, prefix))
  else
    print(("no help text for this %s"):format(type(x)))
  end
end
ml.doc(ml.help, [[
ml.help([value | name | topic]) -- prints help; help() alone prints an overview. At the prompt ?name does the
  same, ?x:method shows a method's text. Topics: "Tensor", "Module", "Dataset", "Optimizer", "Progress",
  "Trace"; "Module:train" names a method.]])
ml.doc(ml.doc, "ml.doc(value, text) -> value; registers a help text (for your own functions too)")

-- Every public function (ml.x, ml.area.x) and method (Kind:x) with its help
-- text (nil when it has none), sorted by name.
function ml.api()
  resolve_methods()
  local out = {}
  local function scan(t, prefix, depth)
    for k, v in pairs(t) do
      if type(k) == "string" and k:sub(1, 1) ~= "_" then
        if type(v) == "function" then out[#out + 1] = {name = prefix .. k, value = v, text = docs[v]} end
        if type(v) == "table" and depth == 0 then scan(v, prefix .. k .. ".", 1) end
      end
    end
  end
  scan(ml, "ml.", 0)
  for _, kind in ipairs(method_kinds) do
    local names, t = methods_of(kind[1])
    for _, k in ipairs(names) do out[#out + 1] = {name = kind[1] .. ":" .. k, value = t[k], text = docs[t[k]]} end
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

-- Names of public functions and methods without a help text (the tests
-- require none).
function ml.undocumented()
  local missing = {}
  for _, e in ipairs(ml.api()) do
    if not e.text then missing[#missing + 1] = e.name end
  end
  return missing
end
ml.doc(ml.api, "ml.api() -> sorted list of {name, value, text} for every public function (ml.x) and method (Module:x)")
ml.doc(ml.undocumented, "ml.undocumented() -> names of public functions (ml.x) and methods (Module:x) that lack a help text")

return true
