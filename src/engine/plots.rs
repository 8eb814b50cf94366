//! SVG plots of a run, drawn with plotters and written atomically: `curves.svg` (loss,
//! accuracy, normalised bit and, in a search to a budget, the controlled `cd`, by epoch) and
//! `arch.svg` (the chosen weight and activation bits per layer, with the layer names: the
//! picture of `arch.json`).

use std::path::Path;

use plotters::prelude::*;

use super::arch_report::ArchReport;
use super::atomic::write_atomic;
use super::metrics::EpochRecord;
use edmips_core::error::{Error, Result};

fn err<E: std::fmt::Display>(e: E) -> Error {
    Error::msg(format!("drawing a plot: {e}"))
}

/// Writes `curves.svg` and `arch.svg` into `out`.
pub fn write_all(out: &Path, history: &[EpochRecord], report: &ArchReport) -> Result<()> {
    write_atomic(&out.join("curves.svg"), curves(history)?.as_bytes())?;
    write_atomic(&out.join("arch.svg"), arch(report)?.as_bytes())
}

type Series<'a> = (&'a str, Vec<(f64, f64)>, RGBColor);

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    series: &[Series],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let pts = series.iter().flat_map(|s| s.1.iter());
    let (mut x1, mut y0, mut y1) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in pts {
        x1 = x1.max(x);
        if y.is_finite() {
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if !y0.is_finite() {
        (y0, y1) = (0.0, 1.0);
    }
    let pad = ((y1 - y0) * 0.1).max(1e-3);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(48)
        .build_cartesian_2d(0f64..x1.max(1.0), (y0 - pad)..(y1 + pad))
        .map_err(err)?;
    chart.configure_mesh().x_desc("epoch").draw().map_err(err)?;
    for (name, pts, color) in series {
        let c = *color;
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
            .map_err(err)?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c));
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled()))).map_err(err)?;
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw().map_err(err)?;
    Ok(())
}

fn curves(h: &[EpochRecord]) -> Result<String> {
    let mut s = String::new();
    {
        let controlled = h.iter().any(|r| r.cd > 0.0) && h.iter().any(|r| r.bit_expected.is_some());
        let panels = if controlled { 4 } else { 3 };
        let root = SVGBackend::with_string(&mut s, (400 * panels as u32, 360)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let areas = root.split_evenly((1, panels));
        let x = |r: &EpochRecord| (r.epoch + 1) as f64;
        panel(
            &areas[0],
            "loss",
            &[
                ("train CE", h.iter().map(|r| (x(r), r.train_ce)).collect(), BLUE),
                ("val CE", h.iter().map(|r| (x(r), r.val_ce)).collect(), RED),
            ],
        )?;
        panel(
            &areas[1],
            "accuracy (%)",
            &[
                ("train top-1", h.iter().map(|r| (x(r), r.train_top1)).collect(), BLUE),
                ("val top-1", h.iter().map(|r| (x(r), r.val_top1)).collect(), RED),
                ("val top-5", h.iter().map(|r| (x(r), r.val_top5)).collect(), GREEN),
            ],
        )?;
        let mut bit = vec![("chosen bits", h.iter().map(|r| (x(r), r.bit)).collect(), BLUE)];
        if h.iter().any(|r| r.bit_expected.is_some()) {
            bit.push(("expected", h.iter().filter_map(|r| r.bit_expected.map(|b| (x(r), b))).collect(), RED));
        }
        panel(&areas[2], "normalised bit", &bit)?;
        if controlled {
            panel(&areas[3], "complexity weight cd", &[("cd", h.iter().map(|r| (x(r), r.cd)).collect(), BLUE)])?;
        }
        root.present().map_err(err)?;
    }
    Ok(s)
}

fn arch(r: &ArchReport) -> Result<String> {
    let mut s = String::new();
    {
        let n = r.layers.len().max(1);
        let name_px = r.layers.iter().map(|l| l.name.len()).max().unwrap_or(4) as i32 * 6 + 14;
        let width = (120 + 30 * n as u32).max(520);
        let height = 320 + name_px as u32;
        let root = SVGBackend::with_string(&mut s, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        // The candidate range when known (search), so charts of successive epochs compare.
        let maxb = r
            .layers
            .iter()
            .flat_map(|l| l.abits.iter().chain(&l.wbits).copied().chain([l.wbit, l.abit]))
            .filter(|&b| b < 32)
            .max()
            .unwrap_or(4) as f64;
        let headline = &r.argmax.headline;
        let caption = format!(
            "{}: chosen bits per layer (epoch {}; {} {:.3}{})",
            r.config,
            r.epoch,
            headline.name,
            headline.value,
            if r.repair.is_some() { ", after the budget repair" } else { "" }
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(name_px)
            .y_label_area_size(40)
            .build_cartesian_2d(0f64..n as f64, 0f64..maxb + 1.5)
            .map_err(err)?;
        chart.configure_mesh().y_desc("bits").disable_x_mesh().x_labels(0).draw().map_err(err)?;
        let clip = |b: u32| (b as f64).min(maxb + 0.5);
        chart
            .draw_series(
                r.layers.iter().enumerate().map(|(i, l)| {
                    Rectangle::new([(i as f64 + 0.1, 0.0), (i as f64 + 0.48, clip(l.wbit))], BLUE.filled())
                }),
            )
            .map_err(err)?
            .label("weight bits")
            .legend(|(x, y)| Rectangle::new([(x, y - 4), (x + 12, y + 4)], BLUE.filled()));
        chart
            .draw_series(
                r.layers.iter().enumerate().map(|(i, l)| {
                    Rectangle::new([(i as f64 + 0.52, 0.0), (i as f64 + 0.9, clip(l.abit))], RED.filled())
                }),
            )
            .map_err(err)?
            .label("activation bits")
            .legend(|(x, y)| Rectangle::new([(x, y - 4), (x + 12, y + 4)], RED.filled()));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(err)?;
        // Layer names under their bars, written downwards.
        let style = ("sans-serif", 12).into_font().transform(FontTransform::Rotate90).color(&BLACK);
        for (i, l) in r.layers.iter().enumerate() {
            let (px, py) = chart.plotting_area().map_coordinate(&(i as f64 + 0.5, 0.0));
            root.draw(&Text::new(l.name.clone(), (px + 6, py + 6), style.clone())).map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(s)
}

/// The combination a sweep row belongs to: its keys other than the budget and the seed.
fn combination(r: &super::sweep::CellResult) -> String {
    if r.kind == "baseline" {
        return "uniform baselines".into();
    }
    let keep: Vec<&str> = r
        .params
        .split("; ")
        .filter(|kv| !(kv.contains("target") || kv.contains("seed") || kv.contains("complexity_decay")))
        .filter(|kv| !kv.is_empty())
        .collect();
    if keep.is_empty() {
        "search".into()
    } else {
        keep.join(", ")
    }
}

/// `pareto.svg` of a sweep: val top-1 (the retrain's when there is one) against the chosen
/// architecture's normalised bit, one colour per combination, the uniform baselines as a line.
pub fn pareto(rows: &[super::sweep::CellResult]) -> Result<String> {
    let pts: Vec<(String, f64, f64)> =
        rows.iter().filter_map(|r| Some((combination(r), r.bit?, r.val_top1()?))).collect();
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, (720, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
        for (_, x, y) in &pts {
            (x0, x1, y0, y1) = (x0.min(*x), x1.max(*x), y0.min(*y), y1.max(*y));
        }
        if !x0.is_finite() {
            (x0, x1, y0, y1) = (1.0, 4.0, 0.0, 100.0);
        }
        let (px, py) = (((x1 - x0) * 0.1).max(0.1), ((y1 - y0) * 0.1).max(1.0));
        let mut chart = ChartBuilder::on(&root)
            .caption("sweep: val top-1 against the chosen architecture's cost", ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d((x0 - px)..(x1 + px), (y0 - py).max(0.0)..(y1 + py).min(100.0))
            .map_err(err)?;
        chart.configure_mesh().x_desc("normalised bit").y_desc("val top-1 (%)").draw().map_err(err)?;
        let palette = [BLUE, RED, GREEN, MAGENTA, CYAN, RGBColor(230, 140, 0), RGBColor(120, 60, 160)];
        let mut groups: Vec<String> = pts.iter().map(|p| p.0.clone()).collect();
        groups.sort();
        groups.dedup();
        for (gi, g) in groups.iter().enumerate() {
            let mine: Vec<(f64, f64)> = pts.iter().filter(|p| &p.0 == g).map(|p| (p.1, p.2)).collect();
            if g == "uniform baselines" {
                // With seeds, several points share a bit: the line joins the mean per bit.
                let mut line: Vec<(f64, f64)> = Vec::new();
                let mut sorted = mine.clone();
                sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
                for chunk in sorted.chunk_by(|a, b| (a.0 - b.0).abs() < 1e-9) {
                    line.push((chunk[0].0, chunk.iter().map(|p| p.1).sum::<f64>() / chunk.len() as f64));
                }
                chart
                    .draw_series(LineSeries::new(line, BLACK.stroke_width(2)))
                    .map_err(err)?
                    .label(g.as_str())
                    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK));
                chart.draw_series(mine.iter().map(|&p| Cross::new(p, 5, BLACK.stroke_width(2)))).map_err(err)?;
            } else {
                let c = palette[gi % palette.len()];
                chart
                    .draw_series(mine.iter().map(|&p| Circle::new(p, 5, c.filled())))
                    .map_err(err)?
                    .label(g.as_str())
                    .legend(move |(x, y)| Circle::new((x + 8, y), 4, c.filled()));
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(s)
}
