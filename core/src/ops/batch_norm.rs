//! Batch normalisation over the channels of an `[N, C, H, W]` tensor, PyTorch semantics
//! (spec §4.2 "BN details"), composed from candle tensor ops (device-generic, autograd for
//! free).
//!
//! * **Train**: normalise with the batch mean and the **biased** batch variance; then update
//!   the running statistics in place, outside the autograd graph:
//!   `running = (1 - momentum)·running + momentum·batch`, using the **unbiased** batch variance
//!   (`var · n / (n - 1)`, `n = N·H·W`) for `running_var`.
//! * **Eval**: normalise with the running statistics.
//!
//! The optional affine scale and shift are applied after normalising.

use candle_core::{DType, Tensor, Var};

use crate::error::{Error, Result};

/// The per-channel tensors of one batch-norm layer.
#[derive(Debug, Clone)]
pub struct BatchNormParams<'a> {
    /// Scale `γ` (`[C]`), if affine.
    pub weight: Option<&'a Tensor>,
    /// Shift `β` (`[C]`), if affine.
    pub bias: Option<&'a Tensor>,
    /// Running mean (`[C]`), updated in place in train mode.
    pub running_mean: &'a Var,
    /// Running variance (`[C]`), updated in place in train mode.
    pub running_var: &'a Var,
    /// Added to the variance.
    pub eps: f64,
    /// Running-statistics momentum.
    pub momentum: f64,
}

fn check(x: &Tensor, p: &BatchNormParams, name: &str) -> Result<usize> {
    let (_, c, _, _) = x.dims4().map_err(|_| Error::Shape {
        context: format!("batch norm {name}"),
        expected: "a rank-4 [N, C, H, W] input".into(),
        found: format!("{:?}", x.dims()),
    })?;
    if p.running_mean.dims() != [c] {
        return Err(Error::Shape {
            context: format!("batch norm {name}"),
            expected: format!("[N, {}, H, W]", p.running_mean.dim(0).unwrap_or(0)),
            found: format!("{:?}", x.dims()),
        });
    }
    Ok(c)
}

fn affine(y: Tensor, p: &BatchNormParams, c: usize) -> Result<Tensor> {
    let y = match p.weight {
        Some(w) => y.broadcast_mul(&w.reshape((1, c, 1, 1))?)?,
        None => y,
    };
    Ok(match p.bias {
        Some(b) => y.broadcast_add(&b.reshape((1, c, 1, 1))?)?,
        None => y,
    })
}

/// Train-mode batch norm: batch statistics, and an in-place running-statistics update.
/// `name` labels errors.
pub fn batch_norm_train(x: &Tensor, p: &BatchNormParams, name: &str) -> Result<Tensor> {
    let c = check(x, p, name)?;
    let (n, _, h, w) = x.dims4()?;
    let count = n * h * w;
    if count < 2 {
        return Err(Error::msg(format!(
            "batch norm {name}: train mode needs more than one value per channel, got input {:?}",
            x.dims()
        )));
    }
    let x = x.to_dtype(DType::F32)?;
    let mean = x.mean_keepdim((0, 2, 3))?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim((0, 2, 3))?;
    let inv = (&var + p.eps)?.sqrt()?.recip()?;
    let y = affine(xc.broadcast_mul(&inv)?, p, c)?;

    // Running statistics: detached, updated in place.
    let m = p.momentum;
    let bmean = mean.detach().flatten_all()?;
    let bvar = (var.detach().flatten_all()? * (count as f64 / (count - 1) as f64))?;
    let rm = ((p.running_mean.as_tensor().detach() * (1.0 - m))? + (bmean * m)?)?;
    let rv = ((p.running_var.as_tensor().detach() * (1.0 - m))? + (bvar * m)?)?;
    p.running_mean.set(&rm)?;
    p.running_var.set(&rv)?;
    Ok(y)
}

/// Eval-mode batch norm: the running statistics (no update). `name` labels errors.
pub fn batch_norm_eval(x: &Tensor, p: &BatchNormParams, name: &str) -> Result<Tensor> {
    let c = check(x, p, name)?;
    let x = x.to_dtype(DType::F32)?;
    let mean = p.running_mean.as_tensor().detach().reshape((1, c, 1, 1))?;
    let inv = (p.running_var.as_tensor().detach() + p.eps)?.sqrt()?.recip()?.reshape((1, c, 1, 1))?;
    affine(x.broadcast_sub(&mean)?.broadcast_mul(&inv)?, p, c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::det_fill;
    use candle_core::Device;

    /// f64 reference of train-mode BN: output, and the gradients of sum(y·g) w.r.t. x, γ, β.
    #[allow(clippy::type_complexity)]
    fn reference(
        x: &[f32],
        d: [usize; 4],
        gamma: &[f32],
        beta: &[f32],
        g: &[f32],
        eps: f64,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let [n, c, h, w] = d;
        let m = (n * h * w) as f64;
        let idx = |ni: usize, ci: usize, k: usize| (ni * c + ci) * h * w + k;
        let (mut y, mut dx) = (vec![0f64; x.len()], vec![0f64; x.len()]);
        let (mut dg, mut db, mut means, mut uvars) = (vec![0f64; c], vec![0f64; c], vec![0f64; c], vec![0f64; c]);
        for ci in 0..c {
            let vals: Vec<(usize, f64)> =
                (0..n).flat_map(|ni| (0..h * w).map(move |k| (ni, k))).map(|(ni, k)| (idx(ni, ci, k), 0.0)).collect();
            let mean = vals.iter().map(|&(e, _)| x[e] as f64).sum::<f64>() / m;
            let var = vals.iter().map(|&(e, _)| (x[e] as f64 - mean).powi(2)).sum::<f64>() / m;
            let inv = 1.0 / (var + eps).sqrt();
            means[ci] = mean;
            uvars[ci] = var * m / (m - 1.0);
            let (mut sg, mut sgx) = (0f64, 0f64);
            for &(e, _) in &vals {
                let xh = (x[e] as f64 - mean) * inv;
                y[e] = xh * gamma[ci] as f64 + beta[ci] as f64;
                dg[ci] += g[e] as f64 * xh;
                db[ci] += g[e] as f64;
                sg += g[e] as f64 * gamma[ci] as f64;
                sgx += g[e] as f64 * gamma[ci] as f64 * xh;
            }
            for &(e, _) in &vals {
                let xh = (x[e] as f64 - mean) * inv;
                dx[e] = inv * (g[e] as f64 * gamma[ci] as f64 - sg / m - xh * sgx / m);
            }
        }
        (y, dx, dg, db, means, uvars)
    }

    #[test]
    fn train_mode_matches_a_float64_reference_including_gradients_and_running_stats() {
        let dev = Device::Cpu;
        let d = [3usize, 4, 5, 6];
        let xv: Vec<f32> =
            det_fill(d.iter().product(), 1, 2.0).iter().enumerate().map(|(i, v)| v + (i % 4) as f32).collect();
        let gamma = det_fill(4, 2, 1.0);
        let beta = det_fill(4, 3, 1.0);
        let gv = det_fill(xv.len(), 4, 1.0);
        let x = Var::from_vec(xv.clone(), d.to_vec(), &dev).unwrap();
        let gw = Var::from_vec(gamma.clone(), 4, &dev).unwrap();
        let gb = Var::from_vec(beta.clone(), 4, &dev).unwrap();
        let rm = Var::from_vec(vec![0.5f32; 4], 4, &dev).unwrap();
        let rv = Var::from_vec(vec![2.0f32; 4], 4, &dev).unwrap();
        let p = BatchNormParams {
            weight: Some(gw.as_tensor()),
            bias: Some(gb.as_tensor()),
            running_mean: &rm,
            running_var: &rv,
            eps: 1e-3,
            momentum: 0.1,
        };
        let y = batch_norm_train(x.as_tensor(), &p, "bn").unwrap();
        let g = Tensor::from_vec(gv.clone(), d.to_vec(), &dev).unwrap();
        let grads = y.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
        let (ry, rdx, rdg, rdb, means, uvars) = reference(&xv, d, &gamma, &beta, &gv, 1e-3);
        let close = |what: &str, got: Vec<f32>, want: &[f64], tol: f64| {
            for (i, (a, b)) in got.iter().zip(want).enumerate() {
                assert!((*a as f64 - b).abs() <= tol * (1.0 + b.abs()), "{what}[{i}]: {a} vs {b}");
            }
        };
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        close("y", flat(&y), &ry, 1e-5);
        close("dx", flat(grads.get(x.as_tensor()).unwrap()), &rdx, 1e-5);
        close("dgamma", flat(grads.get(gw.as_tensor()).unwrap()), &rdg, 1e-5);
        close("dbeta", flat(grads.get(gb.as_tensor()).unwrap()), &rdb, 1e-5);
        let want_rm: Vec<f64> = means.iter().map(|m| 0.9 * 0.5 + 0.1 * m).collect();
        let want_rv: Vec<f64> = uvars.iter().map(|v| 0.9 * 2.0 + 0.1 * v).collect();
        close("running_mean", flat(rm.as_tensor()), &want_rm, 1e-6);
        close("running_var", flat(rv.as_tensor()), &want_rv, 1e-6);
        // Running buffers receive no gradient.
        assert!(grads.get(rm.as_tensor()).is_none() && grads.get(rv.as_tensor()).is_none());

        // Eval mode uses the running statistics.
        let ye = batch_norm_eval(x.as_tensor(), &p, "bn").unwrap();
        let mut want = vec![0f64; xv.len()];
        for (e, v) in xv.iter().enumerate() {
            let ci = (e / 30) % 4;
            want[e] = (*v as f64 - want_rm[ci]) / (want_rv[ci] + 1e-3).sqrt() * gamma[ci] as f64 + beta[ci] as f64;
        }
        close("eval y", flat(&ye), &want, 1e-5);
    }

    #[test]
    fn wrong_channel_count_is_an_error() {
        let dev = Device::Cpu;
        let rm = Var::zeros(3, DType::F32, &dev).unwrap();
        let rv = Var::ones(3, DType::F32, &dev).unwrap();
        let p =
            BatchNormParams { weight: None, bias: None, running_mean: &rm, running_var: &rv, eps: 1e-5, momentum: 0.1 };
        let x = Tensor::zeros((2, 4, 3, 3), DType::F32, &dev).unwrap();
        assert!(batch_norm_train(&x, &p, "bn").unwrap_err().to_string().contains("[N, 3, H, W]"));
    }
}
