#include "config/train_config_schema.h"

#include "config/device_runtime_keys.h"

namespace adapt::config {

namespace {

Schema<adapters::AdapterConfig> adapter_schema() {
  using namespace adapters;
  Schema<LoraConfig> lora;
  lora.field("r", &LoraConfig::r, "LoRA rank.").at_least(std::int64_t{1});
  lora.field("alpha", &LoraConfig::alpha,
             "Scaling numerator: s = alpha / r (alpha / sqrt(r) with use_rslora). Default 16; PEFT's LoraConfig "
             "defaults to 8.")
      .greater_than(0.0);
  lora.field("dropout", &LoraConfig::dropout, "Dropout on the LoRA input during training.").range(0.0, 0.999);
  lora.field("targets", &LoraConfig::targets, "Projections to adapt: q, k, v, o, gate, up, down.")
      .one_of(lora_target_names());
  lora.field("use_rslora", &LoraConfig::use_rslora, "Rank-stabilised scaling alpha / sqrt(r).");
  lora.enumeration("init", &LoraConfig::init, lora_init_names(),
                   "A's initialisation: peft (kaiming-uniform) or gaussian; B starts at 0.");

  Schema<BottleneckConfig> bn;
  bn.field("size", &BottleneckConfig::size, "Bottleneck width m (e.g. 64, 128); or give reduction_factor.")
      .at_least(std::int64_t{1});
  bn.field("reduction_factor", &BottleneckConfig::reduction_factor, "m = hidden_size / reduction_factor.")
      .greater_than(0.0);
  bn.enumeration("placement", &BottleneckConfig::placement, bn_placement_names(),
                 "houlsby (after attention and MLP), pfeiffer (after the MLP) or parallel.");
  bn.enumeration("activation", &BottleneckConfig::activation, bn_activation_names(),
                 "relu, swish or gelu. Default relu for every placement (AdapterHub's "
                 "double_seq_bn, i.e. houlsby, defaults to swish).");
  bn.field("scaling", &BottleneckConfig::scaling,
           "Constant scaling s of the adapter's output. Default 1 for every placement "
           "(AdapterHub's par_bn, i.e. parallel, defaults to 4).");
  bn.field("ln_before", &BottleneckConfig::ln_before, "LayerNorm on the adapter input.");
  bn.field("residual_before_ln", &BottleneckConfig::residual_before_ln, "AdapterHub's residual_before_ln.");

  Schema<AdapterConfig> a;
  a.enumeration("kind", &AdapterConfig::kind, adapter_kind_names(),
                "lora, bottleneck, or lora+bottleneck (both on the same layers, trained together).");
  a.field("name", &AdapterConfig::name, "Adapter name (AdapterHub weight keys).");
  a.field("seed", &AdapterConfig::seed, "Initialisation and dropout seed.").at_least(std::int64_t{0});
  a.field("layers", &AdapterConfig::layers, "Explicit 0-based layer indices (empty: see last_n, else all).");
  a.field("last_n", &AdapterConfig::last_n, "Adapt only the last N layers.").at_least(std::int64_t{1});
  a.table("lora", &AdapterConfig::lora, lora, "LoRA settings (kind = \"lora\" or \"lora+bottleneck\").");
  a.table("bottleneck", &AdapterConfig::bottleneck, bn,
          "Bottleneck settings (kind = \"bottleneck\" or \"lora+bottleneck\").");
  return a;
}

Schema<train::DataConfig> data_schema() {
  using train::DataConfig;
  Schema<DataConfig> d;
  d.field("inputs", &DataConfig::inputs, "JSONL files, source files or folders.").paths();
  d.field("globs", &DataConfig::globs, "File patterns inside input folders, e.g. [\"**/*.py\", \"**/*.cpp\"].");
  d.enumeration("format", &DataConfig::format, train::data_format_names(),
                "text, prompt_completion, chat or raw (default: detected per file).");
  d.field("seq_len", &DataConfig::seq_len, "Tokens per training sequence.").at_least(std::int64_t{1});
  d.field("pack", &DataConfig::pack, "Concatenate documents and cut them into sequences (else pad).");
  d.field("cross_document_attention", &DataConfig::cross_document_attention,
          "Packed rows: let attention cross document boundaries.");
  d.field("loss_on_completions_only", &DataConfig::loss_on_completions_only,
          "Loss only on completions / assistant turns.");
  d.field("add_bos", &DataConfig::add_bos, "Prepend BOS to each document.");
  d.field("add_eos", &DataConfig::add_eos, "Append EOS to each document.");
  d.field("eval_fraction", &DataConfig::eval_fraction,
          "Fraction of documents held out for evaluation, chosen by their contents and data.seed: adding data keeps "
          "the documents held out before (but for a few that new ones displace).")
      .range(1e-9, 0.999999);
  d.field("eval_documents", &DataConfig::eval_documents, "Number of documents held out for evaluation.")
      .at_least(std::int64_t{1});
  d.field("eval_inputs", &DataConfig::eval_inputs, "A separate evaluation set.").paths();
  d.field("seed", &DataConfig::seed, "Document order, eval split and shuffle.");
  d.field("cache_dir", &DataConfig::cache_dir, "Folder for tokenized caches (shared by all ranks).").required();
  d.field("tokenize_threads", &DataConfig::tokenize_threads, "Threads for tokenizing (default: all).")
      .at_least(std::int64_t{1});
  return d;
}

}  // namespace

const Schema<train::TrainConfig>& train_config_schema() {
  static const Schema<train::TrainConfig> schema = [] {
    using namespace train;
    Schema<TrainModelConfig> model;
    model.field("path", &TrainModelConfig::path, "Base model folder in HF layout (frozen).").required();
    model.field("tokenizer", &TrainModelConfig::tokenizer, "Tokenizer file or folder (default: the model's).");

    Schema<OptimConfig> o;
    o.field("lr", &OptimConfig::lr, "Peak learning rate.").greater_than(0.0);
    o.field("weight_decay", &OptimConfig::weight_decay,
            "Decoupled weight decay (AdamW, as torch applies it), on the LoRA "
            "factors and the bottleneck weights; not on biases or LayerNorm.")
        .at_least(0.0);
    o.field("beta1", &OptimConfig::beta1, "Adam beta1.").range(0.0, 0.999999);
    o.field("beta2", &OptimConfig::beta2, "Adam beta2.").range(0.0, 0.999999999);
    o.field("eps", &OptimConfig::eps, "Adam epsilon.").greater_than(0.0);
    o.field("schedule", &OptimConfig::schedule, "constant, linear or cosine (after warmup).")
        .one_of({"constant", "linear", "cosine"});
    o.field("warmup_steps", &OptimConfig::warmup_steps,
            "Linear warmup steps from lr 0: the first update runs at lr 0, as in HF's "
            "schedules (metrics.jsonl logs the lr each step used).")
        .at_least(std::int64_t{0});
    o.field("min_lr_ratio", &OptimConfig::min_lr_ratio,
            "The floor the decay reaches at train.steps, as a fraction of lr (HF's "
            "min_lr_rate: the last step's lr is a little above it); linear and cosine only.")
        .range(0.0, 1.0);
    o.field("max_grad_norm", &OptimConfig::max_grad_norm, "Global gradient-norm clipping (0: off).").at_least(0.0);
    o.field("offload", &OptimConfig::offload,
            "Keep AdamW's fp32 master weights and moments in host RAM, updated by a multithreaded CPU AdamW.");
    o.field("overlap", &OptimConfig::overlap,
            "With offload: run the CPU AdamW while the next step's forward computes, each layer waiting for its "
            "own weights, and bring a GPU's gradients to the host per layer during the backward (same updates; "
            "false: the update between steps). Under ZeRO-1 each layer's part is all-gathered as the forward "
            "reaches it.");

    Schema<LoopConfig> l;
    l.field("steps", &LoopConfig::steps, "Optimizer steps.").at_least(std::int64_t{1});
    l.field("micro_batch", &LoopConfig::micro_batch,
            "Sequences of one micro-step, all data-parallel replicas together (each runs micro_batch / dp; "
            "must be a multiple of dp).")
        .at_least(std::int64_t{1});
    l.field("grad_accum", &LoopConfig::grad_accum, "Micro-batches per optimizer step.").at_least(std::int64_t{1});
    l.field("recompute", &LoopConfig::recompute, "Recompute activations per layer in the backward.");
    l.field("shard_saved_inputs", &LoopConfig::shard_saved_inputs,
            "With recompute and parallel.tp > 1: each tp rank keeps 1/tp of every layer's input and all-gathers "
            "it before recomputing the layer (the same results; the memory that grows with the layers divided "
            "by tp, for one all-gather per layer in the backward and two whole inputs in turn), on the stages "
            "where that saves memory: stage layers x (tp - 1) > tp.");
    l.field("saved_inputs_dtype", &LoopConfig::saved_inputs_dtype,
            "With recompute: the dtype each layer's kept input is stored in. \"f32\": the same results as "
            "without recompute. \"bf16\": half the memory that grows with the layers (each tp rank's shard "
            "with shard_saved_inputs, else the whole input beside two f32 ones in turn, on the stages where that "
            "saves memory); the loss is unchanged and the gradients are those at the inputs rounded to bf16.")
        .one_of({"f32", "bf16"});
    l.field("eval_every", &LoopConfig::eval_every,
            "Steps between evaluations (0: at the end only); a new run also evaluates the base model before its "
            "first step.")
        .at_least(std::int64_t{0});
    l.field("eval_batches", &LoopConfig::eval_batches,
            "Micro-batches (of train.micro_batch rows) per evaluation: the eval loss "
            "is over that many rows, so runs with another micro_batch score other rows.")
        .at_least(std::int64_t{1});
    l.field("log_every", &LoopConfig::log_every, "Steps between progress lines.").at_least(std::int64_t{1});
    l.field("stop_after", &LoopConfig::stop_after,
            "Stop this run after N steps with a checkpoint; running the job again resumes.")
        .at_least(std::int64_t{1});

    Schema<CheckpointConfig> c;
    c.field("dir", &CheckpointConfig::dir, "Checkpoint folder (default: <run.dir>/checkpoints).");
    c.field("every", &CheckpointConfig::every, "Steps between checkpoints (0: at the end and on signals).")
        .at_least(std::int64_t{0});
    c.field("keep_last", &CheckpointConfig::keep_last, "Checkpoints kept (0: all).").at_least(std::int64_t{0});

    Schema<ParallelConfig> par;
    par.field("tp", &ParallelConfig::tp,
              "Tensor-parallel ranks; must divide the attention and KV heads and the world size.")
        .at_least(std::int64_t{1});
    par.field("pp", &ParallelConfig::pp, "Pipeline stages (contiguous layer ranges); dp = world / (tp x pp).")
        .at_least(std::int64_t{1});
    par.field("zero1", &ParallelConfig::zero1,
              "Partition the AdamW state over the dp replicas (ZeRO-1); the updates are the same either way.");

    Schema<RunConfig> r;
    r.field("dir", &RunConfig::dir, "Run folder: metrics.jsonl, config.toml, the exported adapter.").required();
    r.field("merge", &RunConfig::merge,
            "Also write base + LoRA merged as an HF model folder in <run.dir>/merged (kind = \"lora\" only); "
            "adapt_train --merge sets it.");

    Schema<TrainRuntimeConfig> rt;
    add_device_runtime_keys(rt, {.weights = "the frozen weight matrices (norms, activations and the adapter stay f32)",
                                 .streamed_layer_cost = "once per forward and once per backward"});
    rt.field("peak_tflops", &TrainRuntimeConfig::peak_tflops,
             "Peak TFLOP/s of one rank's device, against which each step's MFU (model FLOPs utilisation) is "
             "logged. 0 = the dense bf16 peak of a known GPU (A100, H100, H200, RTX 3080) with weights_dtype = "
             "\"bf16\"; otherwise no MFU is logged, only the model TFLOP/s (give the CPU's or the f32 peak "
             "here to get one).")
        .at_least(0.0);

    Schema<TrainConfig> t;
    t.table("model", &TrainConfig::model, model, "The frozen base model.");
    t.table("adapter", &TrainConfig::adapter, adapter_schema(), "The adapter to train.");
    t.table("data", &TrainConfig::data, data_schema(), "Training (and evaluation) data.");
    t.table("optim", &TrainConfig::optim, o, "AdamW and the learning-rate schedule.");
    t.table("train", &TrainConfig::train, l, "The training loop.");
    t.table("checkpoint", &TrainConfig::checkpoint, c, "HDF5 checkpoints.");
    t.table("parallel", &TrainConfig::parallel, par,
            "Ranks: tp x pp x dp = the world size of mpiexec/srun (one process: all 1).");
    t.table("run", &TrainConfig::run, r, "Where the run writes.");
    t.table("runtime", &TrainConfig::runtime, rt, "Where the run computes (CPU or a GPU per rank).");
    t.check([](const TrainConfig& c) -> std::string {
      if (c.data.inputs.empty()) return "[data] inputs is empty: name at least one JSONL file or source folder";
      if (c.run.merge && adapters::kind_has_bottleneck(c.adapter.kind))
        return fmt::format(
            "run.merge = true (adapt_train --merge) needs adapter.kind = \"lora\", not \"{}\": a bottleneck adapter "
            "is nonlinear and cannot be merged into the base weights.{}",
            c.adapter.kind == adapters::AdapterKind::Bottleneck ? "bottleneck" : "lora+bottleneck",
            c.adapter.kind == adapters::AdapterKind::Bottleneck
                ? ""
                : " After training, merge the LoRA part alone (adapt_model merge --adapter <run.dir>/adapter/lora) "
                  "and apply <run.dir>/adapter/bottleneck on top of the merged model");
      return "";
    });
    return t;
  }();
  return schema;
}

}  // namespace adapt::config
