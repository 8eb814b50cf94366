//! Measured latency: every searchable layer's latency looked up in a table of measurements
//! `(layer shape, wbit, abit) -> microseconds`, as hardware-aware searches (FBNet, HAQ) use it.
//!
//! * **Table** (`table = "path"`, CSV or JSON, chosen by the extension; a relative path is
//!   relative to the working folder). One row per measurement with the keys `in_channels`,
//!   `out_channels`, `kernel`, `stride`, `input_hw`, `wbit`, `abit` and `latency_us`;
//!   `kernel`, `stride` and `input_hw` are a number (square) or `HxW` (JSON: a number or
//!   `[h, w]`). CSV has a header line naming the columns (in any order); JSON is an array of
//!   objects. A repeated measurement is an error naming both rows.
//! * Relaxed, per layer: the expected latency `Σ_i Σ_j p_a[i] · p_w[j] · lat(shape, w_j, a_i)`
//!   under the two bit distributions (the table as a small tensor per layer, kept per device).
//! * Network: summed, divided by the sum over layers of each shape's slowest measurement, so
//!   the complexity term is a fraction of the slowest network the table prices.
//! * Discrete: the table's value; fractional bits (the expected architecture of a search) are
//!   interpolated bilinearly between the measured bit widths around them (NaN when a corner
//!   is missing).
//! * Before a run, every layer's shape and every (wbit, abit) the run may use are checked
//!   against the table: a missing one is an error that names the table, the layers and the
//!   rows to add.
//!
//! The summary reports `latency_us` (the sum over the searchable layers, the headline) and
//! `max_layer_us` (the slowest layer).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use edmips_core::candle::{DType, Tensor};
use edmips_core::{
    parse_params, BitDistribution, ComplexityCost, CostSummary, Error, LayerBits, LayerInfo, Metric, Result, Table,
};

/// The registry id.
pub const ID: &str = "latency_lut";

edmips_core::plugin_params! {
    /// The parameters of [`LatencyLut`].
    pub struct LatencyLutParams {
        /// The table of measured latencies: a CSV or JSON file (see the module docs for its columns).
        pub table: String = String::new(),
    }
}

/// The shape part of a table key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shape {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel (h, w).
    pub kernel: (usize, usize),
    /// Stride (h, w).
    pub stride: (usize, usize),
    /// Input size (h, w).
    pub input_hw: (usize, usize),
}

impl Shape {
    /// The shape of a layer.
    pub fn of(l: &LayerInfo) -> Shape {
        Shape {
            in_channels: l.in_channels,
            out_channels: l.out_channels,
            kernel: l.kernel,
            stride: l.stride,
            input_hw: l.input_hw,
        }
    }

    /// As a CSV row prefix (`in_channels,out_channels,kernel,stride,input_hw`).
    fn csv(&self) -> String {
        let hw = |p: (usize, usize)| if p.0 == p.1 { p.0.to_string() } else { format!("{}x{}", p.0, p.1) };
        format!(
            "{},{},{},{},{}",
            self.in_channels,
            self.out_channels,
            hw(self.kernel),
            hw(self.stride),
            hw(self.input_hw)
        )
    }
}

/// The latency cost: a parsed table.
#[derive(Debug)]
pub struct LatencyLut {
    /// The table file.
    pub path: PathBuf,
    /// `shape -> (wbit, abit) -> µs`.
    pub table: HashMap<Shape, BTreeMap<(u32, u32), f64>>,
    /// Per (device, layer, candidates): the `[abits, wbits]` latency matrix.
    matrices: Mutex<HashMap<String, Tensor>>,
}

/// One measurement of the table: where it was read (for errors) and its key and value.
struct Row {
    at: String,
    shape: Shape,
    wbit: u32,
    abit: u32,
    us: f64,
}

/// A table key: layer shape, wbit, abit.
type Key = (Shape, u32, u32);

/// The columns a table must have.
const COLUMNS: [&str; 8] =
    ["in_channels", "out_channels", "kernel", "stride", "input_hw", "wbit", "abit", "latency_us"];

fn parse_pair(s: &str) -> Option<(usize, usize)> {
    let s = s.trim();
    match s.split_once(['x', 'X']) {
        Some((h, w)) => Some((h.trim().parse().ok()?, w.trim().parse().ok()?)),
        None => s.parse().ok().map(|v| (v, v)),
    }
}

impl LatencyLut {
    /// Reads the table at `path` (CSV or JSON by extension).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::msg(format!("latency_lut: cannot read the table `{}`: {e}", path.display())))?;
        let rows = match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("csv") => Self::parse_csv(&text, path)?,
            Some("json") => Self::parse_json(&text, path)?,
            _ => {
                return Err(Error::config(ID, "table", format!("`{}`: expected a .csv or .json file", path.display())))
            }
        };
        let mut table: HashMap<Shape, BTreeMap<(u32, u32), f64>> = HashMap::new();
        let mut seen: HashMap<Key, String> = HashMap::new();
        for Row { at: where_, shape, wbit: w, abit: a, us } in rows {
            if !(us.is_finite() && us >= 0.0) {
                return Err(Error::msg(format!(
                    "latency_lut `{}` {where_}: latency_us must be a non-negative number, found {us}",
                    path.display()
                )));
            }
            if let Some(first) = seen.insert((shape, w, a), where_.clone()) {
                return Err(Error::msg(format!(
                    "latency_lut `{}`: {where_} repeats the measurement of {first} ({}, w{w}a{a})",
                    path.display(),
                    shape.csv()
                )));
            }
            table.entry(shape).or_default().insert((w, a), us);
        }
        if table.is_empty() {
            return Err(Error::msg(format!("latency_lut `{}`: the table has no rows", path.display())));
        }
        Ok(LatencyLut { path: path.to_path_buf(), table, matrices: Mutex::new(HashMap::new()) })
    }

    fn parse_csv(text: &str, path: &Path) -> Result<Vec<Row>> {
        let mut lines =
            text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        let Some((_, header)) = lines.next() else {
            return Err(Error::msg(format!("latency_lut `{}`: the file is empty", path.display())));
        };
        let names: Vec<String> = header.split(',').map(|h| h.trim().to_ascii_lowercase()).collect();
        let mut col = [0usize; 8];
        for (i, c) in COLUMNS.iter().enumerate() {
            col[i] = names.iter().position(|n| n == c).ok_or_else(|| {
                Error::msg(format!(
                    "latency_lut `{}`: the header has no column `{c}` (expected columns: {})",
                    path.display(),
                    COLUMNS.join(",")
                ))
            })?;
        }
        let mut rows = Vec::new();
        for (n, line) in lines {
            let where_ = format!("line {}", n + 1);
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            let cell = |i: usize| -> Result<&str> {
                cells.get(col[i]).copied().ok_or_else(|| {
                    Error::msg(format!(
                        "latency_lut `{}` {where_}: no value in column `{}`",
                        path.display(),
                        COLUMNS[i]
                    ))
                })
            };
            let bad = |i: usize, v: &str, what: &str| {
                Error::msg(format!(
                    "latency_lut `{}` {where_}, column `{}`: `{v}` is not {what}",
                    path.display(),
                    COLUMNS[i]
                ))
            };
            let int = |i: usize| -> Result<usize> {
                cell(i)?.parse().map_err(|_| bad(i, cell(i).unwrap_or(""), "an integer"))
            };
            let pair = |i: usize| -> Result<(usize, usize)> {
                let v = cell(i)?;
                parse_pair(v).ok_or_else(|| bad(i, v, "a number or HxW"))
            };
            let shape = Shape {
                in_channels: int(0)?,
                out_channels: int(1)?,
                kernel: pair(2)?,
                stride: pair(3)?,
                input_hw: pair(4)?,
            };
            let us: f64 = cell(7)?.parse().map_err(|_| bad(7, cell(7).unwrap_or(""), "a number"))?;
            let (w, a) = (int(5)? as u32, int(6)? as u32);
            rows.push(Row { at: where_.clone(), shape, wbit: w, abit: a, us });
        }
        Ok(rows)
    }

    fn parse_json(text: &str, path: &Path) -> Result<Vec<Row>> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::msg(format!("latency_lut `{}`: not valid JSON: {e}", path.display())))?;
        let Some(items) = v.as_array() else {
            return Err(Error::msg(format!("latency_lut `{}`: expected a JSON array of rows", path.display())));
        };
        let mut rows = Vec::new();
        for (n, item) in items.iter().enumerate() {
            let where_ = format!("row {n}");
            let err = |k: &str, what: &str| {
                Error::msg(format!("latency_lut `{}` {where_}: `{k}` must be {what}", path.display()))
            };
            let int =
                |k: &str| item.get(k).and_then(|x| x.as_u64()).map(|x| x as usize).ok_or_else(|| err(k, "an integer"));
            let pair = |k: &str| -> Result<(usize, usize)> {
                match item.get(k) {
                    Some(serde_json::Value::Number(x)) => x.as_u64().map(|x| (x as usize, x as usize)),
                    Some(serde_json::Value::Array(a)) if a.len() == 2 => {
                        a[0].as_u64().zip(a[1].as_u64()).map(|(h, w)| (h as usize, w as usize))
                    }
                    Some(serde_json::Value::String(s)) => parse_pair(s),
                    _ => None,
                }
                .ok_or_else(|| err(k, "a number, [h, w] or \"HxW\""))
            };
            let shape = Shape {
                in_channels: int("in_channels")?,
                out_channels: int("out_channels")?,
                kernel: pair("kernel")?,
                stride: pair("stride")?,
                input_hw: pair("input_hw")?,
            };
            let us = item.get("latency_us").and_then(|x| x.as_f64()).ok_or_else(|| err("latency_us", "a number"))?;
            let (w, a) = (int("wbit")? as u32, int("abit")? as u32);
            rows.push(Row { at: where_.clone(), shape, wbit: w, abit: a, us });
        }
        Ok(rows)
    }

    /// The measured latency of `layer` at (`wbit`, `abit`), if the table has it.
    pub fn lookup(&self, layer: &LayerInfo, wbit: u32, abit: u32) -> Option<f64> {
        self.table.get(&Shape::of(layer)).and_then(|m| m.get(&(wbit, abit)).copied())
    }

    fn missing(&self, layer: &LayerInfo, wbit: u32, abit: u32) -> Error {
        let shape = Shape::of(layer);
        let what = if self.table.contains_key(&shape) {
            "has this shape but not these bits"
        } else {
            "has no row for this shape"
        };
        Error::msg(format!(
            "latency_lut `{}` {what}: layer {} `{}` at w{wbit}a{abit}; add the row `{},{wbit},{abit},<latency_us>`",
            self.path.display(),
            layer.index,
            layer.name,
            shape.csv()
        ))
    }

    /// The `[abits, wbits]` latency matrix of `layer`, as a tensor on `device` (kept).
    fn matrix(&self, layer: &LayerInfo, act: &BitDistribution, weight: &BitDistribution) -> Result<Tensor> {
        let device = act.probs.device();
        let key = format!("{:?}/{}/{:?}/{:?}", device.location(), layer.index, act.bits, weight.bits);
        let mut cache = self.matrices.lock().map_err(|_| Error::msg("latency_lut: matrix cache poisoned"))?;
        if let Some(t) = cache.get(&key) {
            return Ok(t.clone());
        }
        let mut v = Vec::with_capacity(act.bits.len() * weight.bits.len());
        for &a in &act.bits {
            for &w in &weight.bits {
                v.push(self.lookup(layer, w, a).ok_or_else(|| self.missing(layer, w, a))? as f32);
            }
        }
        let t = Tensor::from_vec(v, (act.bits.len(), weight.bits.len()), device)?;
        cache.insert(key, t.clone());
        Ok(t)
    }

    /// The slowest measurement of `layer`'s shape (0 when the shape is missing).
    fn slowest(&self, layer: &LayerInfo) -> f64 {
        self.table.get(&Shape::of(layer)).map(|m| m.values().cloned().fold(0.0, f64::max)).unwrap_or(0.0)
    }

    /// Bilinear interpolation between the measured bit widths around fractional `bits`.
    fn interpolate(&self, layer: &LayerInfo, bits: LayerBits) -> f64 {
        let Some(m) = self.table.get(&Shape::of(layer)) else { return f64::NAN };
        let around = |vals: BTreeSet<u32>, x: f64| -> Option<(u32, u32, f64)> {
            let lo = vals.iter().rev().find(|&&v| v as f64 <= x).copied().or_else(|| vals.first().copied())?;
            let hi = vals.iter().find(|&&v| v as f64 >= x).copied().or_else(|| vals.last().copied())?;
            let t = if hi == lo { 0.0 } else { ((x - lo as f64) / (hi - lo) as f64).clamp(0.0, 1.0) };
            Some((lo, hi, t))
        };
        let ws: BTreeSet<u32> = m.keys().map(|k| k.0).collect();
        let as_: BTreeSet<u32> = m.keys().map(|k| k.1).collect();
        let (Some((w0, w1, tw)), Some((a0, a1, ta))) = (around(ws, bits.wbit), around(as_, bits.abit)) else {
            return f64::NAN;
        };
        let at = |w: u32, a: u32| m.get(&(w, a)).copied().unwrap_or(f64::NAN);
        let low = at(w0, a0) * (1.0 - tw) + at(w1, a0) * tw;
        let high = at(w0, a1) * (1.0 - tw) + at(w1, a1) * tw;
        low * (1.0 - ta) + high * ta
    }
}

impl ComplexityCost for LatencyLut {
    fn id(&self) -> &str {
        ID
    }

    fn validate(&self, layers: &[LayerInfo], bits: &[(Vec<u32>, Vec<u32>)]) -> Result<()> {
        // Each missing (shape, wbit, abit) once, with the layers that need it, in layer order.
        let mut missing: Vec<(Key, Vec<&LayerInfo>)> = Vec::new();
        for (l, (wbits, abits)) in layers.iter().zip(bits) {
            for &w in wbits {
                for &a in abits {
                    if self.lookup(l, w, a).is_some() {
                        continue;
                    }
                    let key = (Shape::of(l), w, a);
                    match missing.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, ls)) => ls.push(l),
                        None => missing.push((key, vec![l])),
                    }
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let n = missing.len();
        let rows: Vec<String> = missing
            .iter()
            .take(20)
            .map(|((shape, w, a), ls)| {
                let more = if ls.len() > 1 { format!(" and {} more", ls.len() - 1) } else { String::new() };
                format!("  {},{w},{a},<latency_us>   # layer {} '{}'{more}", shape.csv(), ls[0].index, ls[0].name)
            })
            .collect();
        Err(Error::msg(format!(
            "latency_lut `{}` lacks {n} (layer shape, wbit, abit) measurement(s) this run needs; add the rows (columns {}):\n{}{}",
            self.path.display(),
            COLUMNS.join(","),
            rows.join("\n"),
            if n > 20 { format!("\n  ... and {} more", n - 20) } else { String::new() }
        )))
    }

    fn layer_cost(&self, layer: &LayerInfo, act: &BitDistribution, weight: &BitDistribution) -> Result<Tensor> {
        let m = self.matrix(layer, act, weight)?;
        let pa = act.probs.to_dtype(DType::F32)?.unsqueeze(1)?;
        let pw = weight.probs.to_dtype(DType::F32)?.unsqueeze(0)?;
        Ok(m.broadcast_mul(&pa)?.broadcast_mul(&pw)?.sum_all()?)
    }

    fn normalizer(&self, layers: &[LayerInfo]) -> f64 {
        let s: f64 = layers.iter().map(|l| self.slowest(l)).sum();
        if s > 0.0 {
            s
        } else {
            1.0
        }
    }

    fn discrete_cost(&self, layer: &LayerInfo, bits: LayerBits) -> f64 {
        let integral = bits.wbit.fract() == 0.0 && bits.abit.fract() == 0.0 && bits.wbit >= 0.0 && bits.abit >= 0.0;
        if integral {
            if let Some(v) = self.lookup(layer, bits.wbit as u32, bits.abit as u32) {
                return v;
            }
        }
        self.interpolate(layer, bits)
    }

    fn summarize(&self, layers: &[LayerInfo], bits: &[LayerBits]) -> CostSummary {
        let per: Vec<f64> = layers.iter().zip(bits).map(|(l, b)| self.discrete_cost(l, *b)).collect();
        let total: f64 = per.iter().sum();
        let max = per.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        CostSummary {
            headline: Metric::new("latency_us", total, "us"),
            metrics: vec![
                Metric::new("latency_us", total, "us"),
                Metric::new("max_layer_us", if per.is_empty() { 0.0 } else { max }, "us"),
            ],
        }
    }
}

fn build(params: &Table) -> Result<Box<dyn ComplexityCost>> {
    let p: LatencyLutParams = parse_params(ID, params)?;
    if p.table.trim().is_empty() {
        return Err(Error::config(
            ID,
            "table",
            format!("missing: give the measured table, e.g. cost = {{ id = \"{ID}\", table = \"latency.csv\" }} (columns {})", COLUMNS.join(",")),
        ));
    }
    Ok(Box::new(LatencyLut::load(Path::new(&p.table))?))
}

edmips_core::register_cost! {
    id: ID,
    summary: "Measured latency: per-layer (shape, wbit, abit) -> us from a CSV/JSON table; expected latency under the search",
    params: LatencyLutParams,
    build: build,
}

#[cfg(test)]
mod tests {
    use super::*;
    use edmips_core::candle::Device;
    use edmips_core::LayerKind;

    fn layer(index: usize, cin: usize, cout: usize, stride: usize, hw: usize) -> LayerInfo {
        LayerInfo {
            index,
            name: format!("layer{index}"),
            kind: LayerKind::Conv2d,
            in_channels: cin,
            out_channels: cout,
            kernel: (3, 3),
            stride: (stride, stride),
            padding: [1; 4],
            input_hw: (hw, hw),
            output_hw: (hw / stride, hw / stride),
        }
    }

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("edmips-lut-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    const CSV: &str =
        "# measured on a test board\nabit,wbit,in_channels,out_channels,kernel,stride,input_hw,latency_us\n\
        2,1,16,16,3,1,32,10\n2,2,16,16,3,1,32,14\n4,1,16,16,3,1,32,18\n4,2,16,16,3,1,32,30\n\
        2,1,16,32,3x3,2,32x32,6\n2,2,16,32,3,2,32,9\n4,1,16,32,3,2,32,11\n4,2,16,32,3,2,32,20\n";

    #[test]
    fn csv_and_json_tables_price_layers_and_the_expected_latency() {
        let lut = LatencyLut::load(&write("t.csv", CSV)).unwrap();
        let layers = [layer(0, 16, 16, 1, 32), layer(1, 16, 32, 2, 32)];
        assert_eq!(lut.lookup(&layers[1], 2, 4), Some(20.0));
        let s = lut.summarize(&layers, &[LayerBits { wbit: 1.0, abit: 2.0 }, LayerBits { wbit: 2.0, abit: 4.0 }]);
        assert_eq!((s.headline.value, s.get("max_layer_us")), (30.0, Some(20.0)));
        // Fractional bits: bilinear between the measured corners.
        let mid = lut.discrete_cost(&layers[0], LayerBits { wbit: 1.5, abit: 3.0 });
        assert!((mid - (10.0 + 14.0 + 18.0 + 30.0) / 4.0).abs() < 1e-12, "{mid}");
        assert_eq!(lut.normalizer(&layers), 50.0);

        let dist = |bits: Vec<u32>, p: &[f32]| BitDistribution { bits, probs: Tensor::new(p, &Device::Cpu).unwrap() };
        let (a, w) = (dist(vec![2, 4], &[0.25, 0.75]), dist(vec![1, 2], &[0.5, 0.5]));
        let got = lut.layer_cost(&layers[0], &a, &w).unwrap().to_scalar::<f32>().unwrap() as f64;
        let want = 0.25 * (0.5 * 10.0 + 0.5 * 14.0) + 0.75 * (0.5 * 18.0 + 0.5 * 30.0);
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");

        let json = r#"[{"in_channels":16,"out_channels":16,"kernel":3,"stride":1,"input_hw":[32,32],"wbit":1,"abit":2,"latency_us":10}]"#;
        let lut = LatencyLut::load(&write("t.json", json)).unwrap();
        assert_eq!(lut.lookup(&layers[0], 1, 2), Some(10.0));
    }

    #[test]
    fn a_missing_shape_or_bit_width_is_an_error_naming_the_layer_and_the_row_to_add() {
        let lut = LatencyLut::load(&write("m.csv", CSV)).unwrap();
        let layers = [layer(0, 16, 16, 1, 32), layer(1, 32, 64, 2, 16)];
        let e = lut.validate(&layers, &[(vec![1, 2], vec![2, 4]), (vec![1], vec![2])]).unwrap_err().to_string();
        assert!(e.contains("layer 1 'layer1'") && e.contains("32,64,3,2,16,1,2,<latency_us>"), "{e}");
        assert!(!e.contains("layer 0"), "{e}");
        let e = lut.validate(&layers[..1], &[(vec![3], vec![2])]).unwrap_err().to_string();
        assert!(e.contains("16,16,3,1,32,3,2"), "{e}");
        let dist = |bits: Vec<u32>| BitDistribution { bits, probs: Tensor::new(&[1.0f32], &Device::Cpu).unwrap() };
        let e = lut.layer_cost(&layers[1], &dist(vec![2]), &dist(vec![1])).unwrap_err().to_string();
        assert!(e.contains("has no row for this shape"), "{e}");

        let dup = write(
            "d.csv",
            "in_channels,out_channels,kernel,stride,input_hw,wbit,abit,latency_us\n1,1,1,1,1,2,2,3\n1,1,1,1,1,2,2,4\n",
        );
        let e = LatencyLut::load(&dup).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("line 2"), "{e}");
        let bad =
            write("b.csv", "in_channels,out_channels,kernel,stride,input_hw,wbit,abit,latency_us\n1,1,x,1,1,2,2,3\n");
        let e = LatencyLut::load(&bad).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("`kernel`"), "{e}");
        let e = build(&Table::new()).unwrap_err().to_string();
        assert!(e.contains("table"), "{e}");
    }
}
