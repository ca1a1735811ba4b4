//! PEFT adapter directories, written here as PEFT writes them (the JSON by
//! hand, keys sorted and indented as `save_pretrained` does; the weights with
//! the safetensors crate), loaded through `fused_lora::peft`: per-module rank,
//! α and scale by PEFT's rules, fan_in_fan_out, every stored dtype to every
//! element type, every refusal by name, and a serving set of three adapters
//! through the multi-adapter forward against each alone.

mod device;
mod forward_support;

use std::path::Path;

use fused_lora::peft::{base_weight_to_nk, PeftAdapter, ServingSet};
use fused_lora::{AdapterStatus, ForwardOutput, Linear, LoraDType, LoraError, RowAdapters};
use half::{bf16, f16};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

use forward_support::{download, poisoned, random, upload};

/// The config PEFT 0.13+ writes for a LoRA adapter, with `fields` replacing
/// the values of the keys they name (raw JSON); keys sorted, indent 2.
fn config_json(fields: &[(&str, &str)]) -> String {
    let defaults: [(&str, &str); 25] = [
        ("alpha_pattern", "{}"),
        ("auto_mapping", "null"),
        ("base_model_name_or_path", "\"tiny-llama\""),
        ("bias", "\"none\""),
        ("fan_in_fan_out", "false"),
        ("inference_mode", "true"),
        ("init_lora_weights", "true"),
        ("layer_replication", "null"),
        ("layers_pattern", "null"),
        ("layers_to_transform", "null"),
        ("loftq_config", "{}"),
        ("lora_alpha", "16"),
        ("lora_dropout", "0.05"),
        ("megatron_config", "null"),
        ("megatron_core", "\"megatron.core\""),
        ("modules_to_save", "null"),
        ("peft_type", "\"LORA\""),
        ("r", "8"),
        ("rank_pattern", "{}"),
        ("revision", "null"),
        ("target_modules", "[\n    \"v_proj\",\n    \"q_proj\"\n  ]"),
        ("target_parameters", "null"),
        ("task_type", "\"CAUSAL_LM\""),
        ("use_dora", "false"),
        ("use_rslora", "false"),
    ];
    for (key, _) in fields {
        assert!(defaults.iter().any(|(k, _)| k == key), "no config key {key}");
    }
    let lines: Vec<String> = defaults
        .iter()
        .map(|(key, value)| {
            let value = fields.iter().find(|(k, _)| k == key).map_or(*value, |(_, v)| *v);
            format!("  \"{key}\": {value}")
        })
        .collect();
    format!("{{\n{}\n}}", lines.join(",\n"))
}

/// One tensor to store: its full name, stored dtype, shape and f32 values.
struct Stored {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    values: Vec<f32>,
}

/// `values` rounded to `dtype`, little-endian.
fn bytes_of(dtype: Dtype, values: &[f32]) -> Vec<u8> {
    match dtype {
        Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::F16 => values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
        Dtype::BF16 => values.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect(),
        Dtype::F64 => values.iter().flat_map(|&v| (v as f64).to_le_bytes()).collect(),
        other => panic!("test stores no {other:?}"),
    }
}

/// The A and B PEFT saves for `module`: A `[r, k]`, B `[n, r]`, random.
fn pair(module: &str, dtype: Dtype, r: usize, n: usize, k: usize, seed: u64) -> [Stored; 2] {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut values = |len: usize| (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect::<Vec<_>>();
    [
        Stored {
            name: format!("base_model.model.{module}.lora_A.weight"),
            dtype,
            shape: vec![r, k],
            values: values(r * k),
        },
        Stored {
            name: format!("base_model.model.{module}.lora_B.weight"),
            dtype,
            shape: vec![n, r],
            values: values(n * r),
        },
    ]
}

/// A directory holding `config` and the safetensors file of `tensors`.
fn adapter_dir(config: &str, tensors: &[Stored]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("adapter_config.json"), config).expect("write config");
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|t| bytes_of(t.dtype, &t.values)).collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| (t.name.clone(), TensorView::new(t.dtype, t.shape.clone(), b).expect("view")))
        .collect();
    let file = safetensors::serialize(views, None).expect("serialize");
    std::fs::write(dir.path().join("adapter_model.safetensors"), file).expect("write weights");
    dir
}

/// PEFT's scale, computed here from its rule: `α/r`, or `α/√r` with rsLoRA,
/// in Python floats (f64), as the f32 the kernels take.
fn peft_scale(alpha: f64, r: usize, rslora: bool) -> f32 {
    (if rslora { alpha / (r as f64).sqrt() } else { alpha / r as f64 }) as f32
}

const Q0: &str = "model.layers.0.self_attn.q_proj";
const V0: &str = "model.layers.0.self_attn.v_proj";
const Q1: &str = "model.layers.1.self_attn.q_proj";
const V1: &str = "model.layers.1.self_attn.v_proj";
const XQ1: &str = "model.layers.1.mlp.xq_proj";

#[test]
fn rank_and_alpha_patterns_match_as_peft_matches_them() {
    let (n, k) = (8, 16);
    // PEFT tries the keys in the file's order and takes the first that
    // matches `(.*\.)?(key)$`: the key must end the name at a `.` boundary (or
    // be the whole name); `q_proj` does not match `xq_proj`.
    let config = config_json(&[
        ("r", "8"),
        ("lora_alpha", "16"),
        ("rank_pattern", "{\n    \"layers.1.self_attn.q_proj\": 4,\n    \"q_proj\": 2\n  }"),
        ("alpha_pattern", "{\n    \"model.layers.1.self_attn.v_proj\": 3,\n    \"v_proj\": 32.5\n  }"),
        ("target_modules", "[\n    \"q_proj\",\n    \"v_proj\",\n    \"xq_proj\"\n  ]"),
    ]);
    // (module, rank, α) as PEFT's rule gives them.
    let expected = [(Q0, 2, 16.0), (Q1, 4, 16.0), (V0, 8, 32.5), (V1, 8, 3.0), (XQ1, 8, 16.0)];
    let tensors: Vec<Stored> = expected
        .iter()
        .enumerate()
        .flat_map(|(i, &(module, r, _))| pair(module, Dtype::F32, r, n, k, i as u64))
        .collect();
    let dir = adapter_dir(&config, &tensors);
    let adapter = PeftAdapter::<f32>::load(dir.path()).expect("load");
    assert_eq!(adapter.modules.len(), expected.len());
    for (module, r, alpha) in expected {
        let got = adapter.module(module).expect(module);
        assert_eq!((got.rank, got.alpha, got.n, got.k), (r, alpha, n, k), "{module}");
        assert_eq!(got.scale.to_bits(), peft_scale(alpha, r, false).to_bits(), "{module}");
    }
    assert!((adapter.config.lora_dropout - 0.05).abs() < 1e-12);

    // The file's order decides, not the keys' sorted order: with `q_proj`
    // first, layer 1's q_proj takes rank 2 as well.
    let reordered = config_json(&[
        ("rank_pattern", "{\n    \"q_proj\": 2,\n    \"layers.1.self_attn.q_proj\": 4\n  }"),
        ("target_modules", "\"model\\\\.layers\\\\.\\\\d+\\\\.self_attn\\\\.q_proj\""),
    ]);
    let tensors: Vec<Stored> = [Q0, Q1].iter().flat_map(|m| pair(m, Dtype::F32, 2, n, k, 7)).collect();
    let adapter = PeftAdapter::<f32>::load(adapter_dir(&reordered, &tensors).path()).expect("load reordered");
    assert_eq!(adapter.module(Q1).expect("q1").rank, 2);
    assert_eq!(adapter.module(Q1).expect("q1").scale, 8.0);
}

#[test]
fn rslora_scales_by_alpha_over_sqrt_rank() {
    let (n, k) = (8, 16);
    let config = config_json(&[
        ("use_rslora", "true"),
        ("r", "3"),
        ("lora_alpha", "16"),
        ("rank_pattern", "{\n    \"v_proj\": 9\n  }"),
        ("alpha_pattern", "{\n    \"v_proj\": 6\n  }"),
    ]);
    let tensors: Vec<Stored> =
        pair(Q0, Dtype::BF16, 3, n, k, 1).into_iter().chain(pair(V0, Dtype::BF16, 9, n, k, 2)).collect();
    let adapter = PeftAdapter::<bf16>::load(adapter_dir(&config, &tensors).path()).expect("load");
    let q = adapter.module(Q0).expect("q");
    assert_eq!(q.scale.to_bits(), peft_scale(16.0, 3, true).to_bits());
    assert_ne!(q.scale, peft_scale(16.0, 3, false), "rsLoRA must not scale by α/r");
    assert_eq!(adapter.module(V0).expect("v").scale, 2.0); // 6 / √9
}

#[test]
fn fan_in_fan_out_keeps_the_adapter_and_transposes_the_base_weight() {
    // GPT-2's Conv1D stores W [in, out]; PEFT's lora_A / lora_B are
    // nn.Linear either way, so A is [r, in] and B [out, r] on disk.
    let (n, k, r) = (12, 16, 4);
    let module = "transformer.h.0.attn.c_attn";
    let config = config_json(&[("fan_in_fan_out", "true"), ("r", "4"), ("target_modules", "[\n    \"c_attn\"\n  ]")]);
    let tensors = pair(module, Dtype::F32, r, n, k, 3);
    let adapter = PeftAdapter::<f32>::load(adapter_dir(&config, &tensors).path()).expect("load");
    assert!(adapter.config.fan_in_fan_out);
    let got = adapter.module(module).expect("c_attn");
    assert_eq!((got.n, got.k, got.rank), (n, k, r));
    assert_eq!(got.a, tensors[0].values);
    assert_eq!(got.b, tensors[1].values);

    // The base weight [k, n] becomes W0 [n, k]: x·W_kn equals x·W0ᵀ.
    let w_kn: Vec<f32> = random(4, k * n);
    let w0 = base_weight_to_nk(&w_kn, k, n).expect("transpose");
    for row in 0..n {
        for col in 0..k {
            assert_eq!(w0[row * k + col], w_kn[col * n + row], "W0[{row}, {col}]");
        }
    }
    assert!(matches!(base_weight_to_nk(&w_kn[1..], k, n), Err(LoraError::ShapeMismatch { what: "weight", .. })));

    // A stored transposed ([in, r]) is not what PEFT writes: refused by name.
    let mut transposed = pair(module, Dtype::F32, r, n, k, 3);
    transposed[0].shape = vec![k, r];
    let err = PeftAdapter::<f32>::load(adapter_dir(&config, &transposed).path()).expect_err("transposed A");
    assert_format(&err, "adapter_model.safetensors", "c_attn.lora_A.weight");
}

/// Every stored value, converted to `T`: exact when `T` holds it, else the
/// nearest `T` (ties to even), as torch's `.to(dtype)` rounds.
fn check_conversion<T: LoraDType + std::fmt::Debug>(stored: Dtype) {
    let (n, k, r) = (4, 8, 2);
    let mut tensors = pair(Q0, stored, r, n, k, 11);
    // Values that round differently in each format, and f16's overflow.
    tensors[0].values[..4].copy_from_slice(&[1.0 + 3.0 / 1024.0 + 1e-7, 65520.0, -1.0e-6, 1.0 / 3.0]);
    let config = config_json(&[("r", "2"), ("target_modules", "[\n    \"q_proj\"\n  ]")]);
    let adapter = PeftAdapter::<T>::load(adapter_dir(&config, &tensors).path()).expect("load");
    let got = adapter.module(Q0).expect("q");
    for (what, values, converted) in [("A", &tensors[0].values, &got.a), ("B", &tensors[1].values, &got.b)] {
        assert_eq!(converted.len(), values.len());
        for (i, (&value, &c)) in values.iter().zip(converted.iter()).enumerate() {
            let on_disk = match stored {
                Dtype::F32 => value,
                Dtype::F16 => f16::from_f32(value).to_f32(),
                _ => bf16::from_f32(value).to_f32(),
            };
            // f32 holds every f16 and bf16; otherwise only the same format.
            let holds_it = matches!(
                (stored, T::DTYPE),
                (_, fused_lora::DType::F32)
                    | (Dtype::F16, fused_lora::DType::F16)
                    | (Dtype::BF16, fused_lora::DType::Bf16)
            );
            let want = T::from_f32(on_disk);
            if holds_it {
                assert_eq!(c.to_f32().to_bits(), on_disk.to_bits(), "{what}[{i}] {stored:?} -> {}", T::DTYPE);
            }
            assert_eq!(c.to_f32().to_bits(), want.to_f32().to_bits(), "{what}[{i}] {stored:?} -> {}", T::DTYPE);
        }
    }
}

#[test]
fn every_stored_dtype_converts_to_every_element_type() {
    for stored in [Dtype::F32, Dtype::F16, Dtype::BF16] {
        check_conversion::<f32>(stored);
        check_conversion::<f16>(stored);
        check_conversion::<bf16>(stored);
    }
    // Spot checks of the rounding itself, independent of `half`: 1 + 3·2⁻¹⁰
    // (+ε) in f32 is between bf16's 1 + 2⁻⁷·0 and 1 + 2⁻⁷: nearest is 1.0;
    // in f16 it is exact. 65520 overflows f16 to +inf, bf16 rounds it to 65536.
    let config = config_json(&[("r", "2"), ("target_modules", "[\n    \"q_proj\"\n  ]")]);
    let mut tensors = pair(Q0, Dtype::F32, 2, 4, 8, 11);
    tensors[0].values[..2].copy_from_slice(&[1.0 + 3.0 / 1024.0, 65520.0]);
    let dir = adapter_dir(&config, &tensors);
    let as_bf16 = PeftAdapter::<bf16>::load(dir.path()).expect("bf16");
    let as_f16 = PeftAdapter::<f16>::load(dir.path()).expect("f16");
    assert_eq!(as_bf16.module(Q0).expect("q").a[..2], [bf16::from_f32(1.0), bf16::from_f32(65536.0)]);
    assert_eq!(as_f16.module(Q0).expect("q").a[0].to_f32(), 1.0 + 3.0 / 1024.0);
    assert_eq!(as_f16.module(Q0).expect("q").a[1], f16::INFINITY);
}

/// `err` is a PeftFormat naming `file` (its file name) and containing `item`.
#[track_caller]
fn assert_format(err: &LoraError, file: &str, item: &str) {
    match err {
        LoraError::PeftFormat { file: f, item: i, .. } => {
            assert_eq!(f.file_name().and_then(|s| s.to_str()), Some(file), "{err}");
            assert!(i.contains(item), "{err} should name {item}");
        }
        other => panic!("expected a format error naming {file} / {item}, got {other:?}"),
    }
    assert!(err.to_string().contains(file) && err.to_string().contains(item), "{err}");
}

/// `err` is a PeftUnsupported naming `option` in its option or value.
#[track_caller]
fn assert_unsupported(err: &LoraError, option: &str) {
    match err {
        LoraError::PeftUnsupported { option: o, value, .. } => {
            assert!(o.contains(option) || value.contains(option), "{err} should name {option}");
        }
        other => panic!("expected an unsupported-option error naming {option}, got {other:?}"),
    }
}

fn load_err(config: &str, tensors: &[Stored]) -> LoraError {
    PeftAdapter::<bf16>::load(adapter_dir(config, tensors).path()).expect_err("must be refused")
}

#[test]
fn unsupported_options_are_refused_by_name() {
    let tensors = pair(Q0, Dtype::F32, 8, 8, 16, 5);
    for (key, value) in [
        ("use_dora", "true"),
        ("bias", "\"lora_only\""),
        ("bias", "\"all\""),
        ("peft_type", "\"IA3\""),
        ("modules_to_save", "[\n    \"score\"\n  ]"),
        ("target_parameters", "[\n    \"experts.gate_up_proj\"\n  ]"),
    ] {
        let err = load_err(&config_json(&[(key, value)]), &tensors);
        assert_unsupported(&err, key);
        assert!(err.to_string().contains("adapter_config.json"), "{err}");
    }

    // A pickle instead of safetensors.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("adapter_config.json"), config_json(&[])).expect("config");
    std::fs::write(dir.path().join("adapter_model.bin"), b"PK\x03\x04 not read").expect("bin");
    let err = PeftAdapter::<bf16>::load(dir.path()).expect_err("pickle");
    assert_unsupported(&err, "pickle");
    assert!(err.to_string().contains("adapter_model.bin"), "{err}");

    // Tensors that are not LoRA A/B: DoRA's magnitude, an embedding adapter.
    let mut dora: Vec<Stored> = pair(Q0, Dtype::F32, 8, 8, 16, 5).into_iter().collect();
    dora.push(Stored {
        name: format!("base_model.model.{Q0}.lora_magnitude_vector"),
        dtype: Dtype::F32,
        shape: vec![8],
        values: vec![1.0; 8],
    });
    assert_unsupported(&load_err(&config_json(&[]), &dora), "lora_magnitude_vector");

    // Stored as f64.
    let f64_pair = pair(Q0, Dtype::F64, 8, 8, 16, 5);
    assert_unsupported(&load_err(&config_json(&[]), &f64_pair), "lora_A.weight");
}

#[test]
fn malformed_directories_name_the_file_and_the_tensor() {
    let (n, k) = (8, 16);
    let good = config_json(&[("r", "4"), ("rank_pattern", "{\n    \"v_proj\": 2\n  }")]);
    let tensors =
        || pair(Q0, Dtype::F16, 4, n, k, 6).into_iter().chain(pair(V0, Dtype::F16, 2, n, k, 7)).collect::<Vec<_>>();
    PeftAdapter::<bf16>::load(adapter_dir(&good, &tensors()).path()).expect("the unbroken directory loads");

    // Bad JSON.
    let err = load_err("{\n  \"peft_type\": \"LORA\",\n  \"r\": 4,\n", &tensors());
    assert_format(&err, "adapter_config.json", "adapter_config.json");
    let err = load_err(&config_json(&[("r", "\"four\"")]), &tensors());
    assert_format(&err, "adapter_config.json", "adapter_config.json");
    let err = load_err(&config_json(&[("rank_pattern", "{\n    \"v_proj\": 0\n  }")]), &tensors());
    assert_format(&err, "adapter_config.json", "rank_pattern.v_proj");

    // Truncated safetensors: every cut is refused, none panics.
    let dir = adapter_dir(&good, &tensors());
    let file = dir.path().join("adapter_model.safetensors");
    let whole = std::fs::read(&file).expect("read");
    for cut in [whole.len() - 1, whole.len() / 2, 9, 3, 0] {
        std::fs::write(&file, &whole[..cut]).expect("truncate");
        let err = PeftAdapter::<bf16>::load(dir.path()).expect_err("truncated");
        assert_format(&err, "adapter_model.safetensors", "adapter_model.safetensors");
    }

    // Missing B, missing A.
    let mut no_b = tensors();
    no_b.remove(1);
    assert_format(&load_err(&good, &no_b), "adapter_model.safetensors", &format!("{Q0}.lora_B.weight"));
    let mut no_a = tensors();
    no_a.remove(2);
    assert_format(&load_err(&good, &no_a), "adapter_model.safetensors", &format!("{V0}.lora_A.weight"));

    // Wrong shapes: A of 3 dimensions; B whose rank disagrees with A's.
    let mut cube = tensors();
    cube[0].shape = vec![4, 4, 4];
    assert_format(&load_err(&good, &cube), "adapter_model.safetensors", &format!("{Q0}.lora_A.weight"));
    let mut wide_b = tensors();
    wide_b[1] = Stored { shape: vec![n / 2, 8], ..pair(Q0, Dtype::F16, 8, n / 2, k, 6).into_iter().nth(1).expect("b") };
    assert_format(&load_err(&good, &wide_b), "adapter_model.safetensors", &format!("{Q0}.lora_B.weight"));

    // Rank mismatch with the config: v_proj is rank 2 by rank_pattern, the
    // file's is 4 (as if the pattern had been forgotten).
    let stale = config_json(&[("r", "4")]);
    assert_format(&load_err(&stale, &tensors()), "adapter_model.safetensors", &format!("{V0}.lora_A.weight"));

    // A module the config does not target.
    let only_q = config_json(&[
        ("r", "4"),
        ("rank_pattern", "{\n    \"v_proj\": 2\n  }"),
        ("target_modules", "[\n    \"q_proj\"\n  ]"),
    ]);
    assert_format(&load_err(&only_q, &tensors()), "adapter_model.safetensors", V0);

    // No config at all.
    let dir = tempfile::tempdir().expect("temp dir");
    let err = PeftAdapter::<bf16>::load(dir.path()).expect_err("no config");
    assert!(matches!(&err, LoraError::Io { file, .. } if file.ends_with("adapter_config.json")), "{err:?}");
}

/// Adapters of a serving set may adapt different modules: where one has no
/// adapter, its slot is zero (rank 1, scale 0) and its rows get the base
/// output, bit for bit. A module of different N or K, or a name given twice,
/// is refused.
#[test]
fn serving_sets_of_different_modules_give_base_rows_where_an_adapter_is_absent() {
    let Some(dev) = device::device() else { return };
    let s = &dev.stream;
    let (m, n, k) = (4, 8, 16);
    let config = config_json(&[("r", "2")]);
    let qv_dir = adapter_dir(
        &config,
        &pair(Q0, Dtype::F32, 2, n, k, 1).into_iter().chain(pair(V0, Dtype::F32, 2, n, k, 2)).collect::<Vec<_>>(),
    );
    let q_dir = adapter_dir(&config, &pair(Q0, Dtype::F32, 2, n, k, 3));
    let wide_dir = adapter_dir(&config, &pair(Q0, Dtype::F32, 2, 2 * n, k, 3));
    let qv = PeftAdapter::<bf16>::load(qv_dir.path()).expect("qv");
    let q_only = PeftAdapter::<bf16>::load(q_dir.path()).expect("q");
    let q_wide = PeftAdapter::<bf16>::load(wide_dir.path()).expect("q wide");

    let set = ServingSet::pack(s, &[("qv", &qv), ("q", &q_only)]).expect("pack");
    let v = set.layer(V0).expect("v_proj is served");
    assert_eq!((v.ranks(), v.scales()), (&[2, 1][..], &[8.0, 0.0][..]));
    let x = upload(s, &random::<bf16>(60, m * k));
    let w = upload(s, &random::<bf16>(61, n * k));
    let linear = Linear { weight: w.as_view(), bias: None, n, k };
    let run = |index: &[i32]| {
        let index = upload(s, index);
        let mut status = AdapterStatus::new(s).expect("status");
        let mut y = poisoned::<bf16>(s, m * n);
        let stack = v.stack();
        let mut rows = RowAdapters { index: index.as_view(), status: &mut status };
        let mut out = ForwardOutput { y: y.as_view_mut(), p: None };
        dev.kernels.forward_multi(s, &x.as_view(), &linear, &stack, &mut rows, None, &mut out).expect("forward_multi");
        status.check(s).expect("indices in range");
        download(s, &y).iter().map(|e| e.to_bits()).collect::<Vec<_>>()
    };
    let (with_q, base, with_qv) = (run(&[1; 4]), run(&[-1; 4]), run(&[0; 4]));
    assert_eq!(with_q, base, "rows of the adapter without v_proj get the base output");
    assert_ne!(with_qv, base, "rows of the adapter with v_proj do not");

    let err = ServingSet::pack(s, &[("q", &q_only), ("wide", &q_wide)]).err().expect("other n");
    assert!(matches!(&err, LoraError::InAdapter { adapter: 1, .. }) && err.to_string().contains(Q0), "{err}");
    let err = ServingSet::pack(s, &[("q", &q_only), ("q", &q_only)]).err().expect("same name");
    assert!(matches!(err, LoraError::InvalidArgument { what: "adapter name", .. }), "{err}");
    let err = ServingSet::<bf16>::pack(s, &[]).err().expect("empty");
    assert!(matches!(err, LoraError::InvalidArgument { what: "adapters", .. }), "{err}");
}

/// Three adapters of ranks 2, 5 and 8 (different α, one rsLoRA, stored in
/// three dtypes) packed into a serving set: each row of the multi-adapter
/// forward equals that row of the single-adapter forward with its adapter,
/// bit for bit, in both modules; base-only rows (-1) too.
#[test]
fn a_serving_set_of_three_adapters_matches_each_adapter_alone() {
    let Some(dev) = device::device() else { return };
    let s = &dev.stream;
    let (m, n, k) = (6, 24, 32);
    let specs = [
        ("math", 2, "4", "false", Dtype::F32),
        ("code", 5, "10", "true", Dtype::F16),
        ("chat", 8, "16", "false", Dtype::BF16),
    ];
    let dirs: Vec<tempfile::TempDir> = specs
        .iter()
        .enumerate()
        .map(|(i, &(_, r, alpha, rslora, dtype))| {
            let r_text = r.to_string();
            let config = config_json(&[("r", &r_text), ("lora_alpha", alpha), ("use_rslora", rslora)]);
            let tensors: Vec<Stored> = pair(Q0, dtype, r, n, k, 10 * i as u64)
                .into_iter()
                .chain(pair(V0, dtype, r, n, k, 10 * i as u64 + 1))
                .collect();
            adapter_dir(&config, &tensors)
        })
        .collect();
    let adapters: Vec<PeftAdapter<bf16>> = dirs.iter().map(|d| PeftAdapter::load(d.path()).expect("load")).collect();
    let named: Vec<(&str, &PeftAdapter<bf16>)> = specs.iter().map(|s| s.0).zip(&adapters).collect();
    let set = ServingSet::pack(s, &named).expect("pack");
    assert_eq!(set.names(), ["math", "code", "chat"]);
    assert_eq!((set.index_of("code"), set.index_of("chat"), set.index_of("none")), (Some(1), Some(2), None));

    let x = upload(s, &random::<bf16>(50, m * k));
    let w = upload(s, &random::<bf16>(51, n * k));
    let linear = Linear { weight: w.as_view(), bias: None, n, k };
    let names = ["chat", "math", "-", "code", "math", "chat"];
    let index_host: Vec<i32> = names.iter().map(|name| set.index_of(name).map_or(-1, |i| i as i32)).collect();
    let index = upload(s, &index_host);
    for module in [Q0, V0] {
        let packed = set.layer(module).expect("packed module");
        let want_scales: Vec<f32> = specs
            .iter()
            .map(|&(_, r, alpha, rslora, _)| peft_scale(alpha.parse().expect("alpha"), r, rslora == "true"))
            .collect();
        assert_eq!((packed.ranks(), packed.scales(), packed.r_max()), (&[2, 5, 8][..], &want_scales[..], 8));

        let mut status = AdapterStatus::new(s).expect("status");
        let mut y = poisoned::<bf16>(s, m * n);
        let stack = packed.stack();
        let mut rows = RowAdapters { index: index.as_view(), status: &mut status };
        let mut out = ForwardOutput { y: y.as_view_mut(), p: None };
        dev.kernels.forward_multi(s, &x.as_view(), &linear, &stack, &mut rows, None, &mut out).expect("forward_multi");
        status.check(s).expect("indices in range");
        let y_multi = download(s, &y);
        assert!(y_multi.iter().all(|v| v.is_finite()), "{module}: an unwritten output");

        // Base-only rows (-1) against the same forward with every row -1.
        let base = {
            let none = upload(s, &vec![-1i32; m]);
            let mut status = AdapterStatus::new(s).expect("status");
            let mut y = poisoned::<bf16>(s, m * n);
            let mut rows = RowAdapters { index: none.as_view(), status: &mut status };
            let mut out = ForwardOutput { y: y.as_view_mut(), p: None };
            dev.kernels.forward_multi(s, &x.as_view(), &linear, &stack, &mut rows, None, &mut out).expect("base");
            download(s, &y)
        };
        for (row, name) in names.iter().enumerate() {
            let want = match set.index_of(name) {
                Some(l) => {
                    let alone = adapters[l].module(module).expect("module").upload(s).expect("upload");
                    let mut y_one = poisoned::<bf16>(s, m * n);
                    let mut out = ForwardOutput { y: y_one.as_view_mut(), p: None };
                    dev.kernels.forward(s, &x.as_view(), &linear, &alone.adapter(), None, &mut out).expect("forward");
                    download(s, &y_one)
                }
                None => base.clone(),
            };
            let (got, want) = (&y_multi[row * n..(row + 1) * n], &want[row * n..(row + 1) * n]);
            let bits = |v: &[bf16]| v.iter().map(|e| e.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(got), bits(want), "{module}, row {row} ({name})");
        }
    }
}

/// The tests write real files; make sure the helper itself writes what
/// safetensors reads back (a broken writer would make every test above moot).
#[test]
fn the_test_writer_round_trips() {
    let tensors = pair(Q0, Dtype::BF16, 2, 4, 8, 9);
    let dir = adapter_dir(&config_json(&[]), &tensors);
    let bytes = std::fs::read(Path::new(dir.path()).join("adapter_model.safetensors")).expect("read");
    let read = safetensors::SafeTensors::deserialize(&bytes).expect("parse");
    let a = read.tensor(&tensors[0].name).expect("A");
    assert_eq!((a.dtype(), a.shape()), (Dtype::BF16, &[2usize, 8][..]));
    assert_eq!(a.data(), bytes_of(Dtype::BF16, &tensors[0].values).as_slice());
}
