//! Parity of the searchable and fixed-bit convolutions with the reference:
//! `mix_activ_conv.json` (output, mixed operands, all four gradients, complexity term).
//!
//! Runs on `EDMIPS_TEST_DEVICE` (default the CPU; `scripts/gpu-check.sh` also runs it on CUDA)
//! at the README's f32-port tolerances on both: a 36-term convolution summed in another order
//! (cuBLAS / cuDNN) moves the output by ~1e-7, well inside 2e-6, and the nearest rounding
//! boundary is 3e-4 steps away, so a larger error is a bug on any device.

mod common;

use std::sync::Arc;

use common::*;
use edmips::core::candle::{Device, Tensor, Var};
use edmips::core::layers::{FixedConv, MixedConv};
use edmips::core::{LayerInfo, LayerKind};
use edmips::plugins::{BitOps, Gauss, Hwgq, Softmax};
use edmips::{ComplexityCost, RelaxContext};

fn layer_info(gold: &serde_json::Value) -> LayerInfo {
    let l = &gold["layer"];
    let (cin, cout) = (l["in"].as_u64().unwrap() as usize, l["out"].as_u64().unwrap() as usize);
    let (k, s, p) = (
        l["kernel_size"].as_u64().unwrap() as usize,
        l["stride"].as_u64().unwrap() as usize,
        l["padding"].as_u64().unwrap() as usize,
    );
    let (shape, _) = tensor(&gold["x"]);
    let out = LayerInfo::conv_out(shape[2], k, s, p, p).unwrap();
    LayerInfo {
        index: 0,
        name: "mix".into(),
        kind: LayerKind::Conv2d,
        in_channels: cin,
        out_channels: cout,
        kernel: (k, k),
        stride: (s, s),
        padding: [p; 4],
        input_hw: (shape[2], shape[3]),
        output_hw: (out, out),
    }
}

#[test]
fn mixed_conv_forward_backward_and_complexity_match_the_reference() {
    let gold = load("mix_activ_conv.json");
    let info = layer_info(&gold);
    assert_eq!(info.size_product(), gold["size_product"].as_f64().unwrap() as f32);
    assert_eq!(info.memory_size(), gold["memory_size"].as_f64().unwrap() as f32);
    assert_eq!(info.param_size(), gold["param_size"].as_f64().unwrap());

    let dev = test_device();
    let (xs, xv) = tensor(&gold["x"]);
    let x = Var::from_vec(xv, xs.as_slice(), &dev).unwrap();
    let (ws, wv) = tensor(&gold["weight"]);
    let layer = MixedConv {
        info: info.clone(),
        weight: Var::from_vec(wv, ws.as_slice(), &dev).unwrap(),
        alpha_activ: Var::from_vec(f32s(&gold["alpha_activ"]), 3, &dev).unwrap(),
        alpha_weight: Var::from_vec(f32s(&gold["alpha_weight"]), 4, &dev).unwrap(),
        abits: vec![2, 3, 4],
        wbits: vec![1, 2, 3, 4],
        act_quantizer: Arc::new(Hwgq),
        weight_quantizer: Arc::new(Gauss),
        relaxation: Arc::new(Softmax::default()),
        act_learned: Default::default(),
        weight_learned: Default::default(),
    };
    layer.validate().unwrap();
    let ctx = RelaxContext::default();
    let out = layer.forward(x.as_tensor(), &ctx).unwrap();

    // Intermediates.
    let xh = layer.mixed_activation(x.as_tensor(), &out.act).unwrap();
    let wh = layer.mixed_weight(&out.weight).unwrap();
    assert_close("mixed_activation", &host(&xh), &tensor(&gold["mixed_activation"]).1, 2e-6);
    assert_close("mixed_weight", &host(&wh), &tensor(&gold["mixed_weight"]).1, 2e-6);
    assert_close("out", &host(&out.y), &tensor(&gold["out"]).1, 2e-6);

    // Loss = sum(out * g) + cd * complexity (the layer's own, unnormalised).
    let g = candle_tensor_on(&gold["g"], &dev);
    let cd = gold["cd"].as_f64().unwrap();
    let data_loss = out.y.mul(&g).unwrap().sum_all().unwrap();
    let complexity = BitOps::default().layer_cost(&info, &out.act, &out.weight).unwrap();
    let loss = data_loss.add(&(&complexity * cd).unwrap()).unwrap();
    let scalar = |t: &Tensor| t.to_scalar::<f32>().unwrap() as f64;
    assert_rel("data_loss", scalar(&data_loss), gold["data_loss"].as_f64().unwrap(), 1e-6);
    assert_rel("complexity_loss", scalar(&complexity), gold["complexity_loss"].as_f64().unwrap(), 1e-6);
    assert_rel("loss", scalar(&loss), gold["loss"].as_f64().unwrap(), 1e-6);

    let grads = loss.backward().unwrap();
    let gget = |v: &Var| host(grads.get(v.as_tensor()).unwrap());
    assert_close("grad_x", &gget(&x), &tensor(&gold["grad_x"]).1, 2e-6);
    assert_close("grad_weight", &gget(&layer.weight), &tensor(&gold["grad_weight"]).1, 1e-5);
    assert_close("grad_alpha_activ", &gget(&layer.alpha_activ), &f32s(&gold["grad_alpha_activ"]), 1e-5);
    assert_close("grad_alpha_weight", &gget(&layer.alpha_weight), &f32s(&gold["grad_alpha_weight"]), 1e-5);

    // The complexity term alone.
    let c_only = BitOps::default().layer_cost(&info, &out.act, &out.weight).unwrap().backward().unwrap();
    let cget = |v: &Var| host(c_only.get(v.as_tensor()).unwrap());
    assert_close(
        "grad_alpha_activ_complexity_only",
        &cget(&layer.alpha_activ),
        &f32s(&gold["grad_alpha_activ_complexity_only"]),
        1e-5,
    );
    assert_close(
        "grad_alpha_weight_complexity_only",
        &cget(&layer.alpha_weight),
        &f32s(&gold["grad_alpha_weight_complexity_only"]),
        1e-5,
    );
}

#[test]
fn fixed_bit_conv_matches_the_reference() {
    let gold = load("mix_activ_conv.json");
    let info = layer_info(&gold);
    let dev = test_device();
    let g = candle_tensor_on(&gold["g"], &dev);
    let cases = gold["quant_activ_conv_cases"]["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for case in cases {
        let (wbit, abit) = (case["wbit"].as_u64().unwrap() as u32, case["abit"].as_u64().unwrap() as u32);
        let (xs, xv) = tensor(&gold["x"]);
        let x = Var::from_vec(xv, xs.as_slice(), &dev).unwrap();
        let (ws, wv) = tensor(&gold["weight"]);
        let layer = FixedConv {
            info: info.clone(),
            weight: Var::from_vec(wv, ws.as_slice(), &dev).unwrap(),
            wbit,
            abit,
            act_quantizer: Arc::new(Hwgq),
            weight_quantizer: Arc::new(Gauss),
            act_learned: Default::default(),
            weight_learned: Default::default(),
        };
        layer.validate().unwrap();
        let y = layer.forward(x.as_tensor()).unwrap();
        let what = format!("w{wbit}a{abit}");
        assert_close(&format!("{what} out"), &host(&y), &tensor(&case["out"]).1, 2e-6);
        let grads = y.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
        assert_close(
            &format!("{what} grad_x"),
            &host(grads.get(x.as_tensor()).unwrap()),
            &tensor(&case["grad_x"]).1,
            2e-6,
        );
        assert_close(
            &format!("{what} grad_weight"),
            &host(grads.get(layer.weight.as_tensor()).unwrap()),
            &tensor(&case["grad_weight"]).1,
            1e-5,
        );
    }
}

#[test]
fn a_wrong_input_size_names_the_layer_and_the_expected_shape() {
    let gold = load("mix_activ_conv.json");
    let info = layer_info(&gold);
    let dev = Device::Cpu;
    let (ws, wv) = tensor(&gold["weight"]);
    let layer = FixedConv {
        info,
        weight: Var::from_vec(wv, ws.as_slice(), &dev).unwrap(),
        wbit: 2,
        abit: 2,
        act_quantizer: Arc::new(Hwgq),
        weight_quantizer: Arc::new(Gauss),
        act_learned: Default::default(),
        weight_learned: Default::default(),
    };
    let x = Tensor::zeros((1, 4, 8, 8), edmips::core::candle::DType::F32, &dev).unwrap();
    let e = layer.forward(&x).unwrap_err().to_string();
    assert!(e.contains("layer mix input") && e.contains("[N, 4, 9, 9]") && e.contains("[1, 4, 8, 8]"), "{e}");
}
