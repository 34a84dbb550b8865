//! `kafka-workload report` and `--html`: one self-contained HTML page of a run or a fleet.
//!
//! The page holds the runs' settings, a summary table (one row per instance, and one for the
//! merged fleet when there are several), the audit verdict, the text summary, and plots drawn
//! with plotters' SVG backend and inlined: throughput over time, latency percentiles over time,
//! and the latency distribution as a percentile spectrum. No script, no stylesheet or font from
//! the network: the file can be mailed and opened anywhere.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;

use super::result::{Latency, RunResult, Series};

/// One result on the page, under a label (its file name, or "fleet (merged)").
pub struct Input {
    /// How tables and legends name it.
    pub label: String,
    /// The result.
    pub result: RunResult,
}

/// Writes the page for `inputs`, plus `merged` (the fleet) when there are several.
pub fn write(path: &Path, inputs: &[Input], merged: Option<&RunResult>) -> anyhow::Result<()> {
    let html = render(inputs, merged)?;
    super::write_atomically(path, html.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The page as a string.
pub fn render(inputs: &[Input], merged: Option<&RunResult>) -> anyhow::Result<String> {
    anyhow::ensure!(!inputs.is_empty(), "nothing to report");
    // The result the verdict and the percentile plots speak for: the fleet, or the one run.
    let whole = merged.unwrap_or(&inputs[0].result);
    let mut rows: Vec<(&str, &RunResult)> = inputs
        .iter()
        .map(|i| (i.label.as_str(), &i.result))
        .collect();
    if let Some(m) = merged {
        rows.push((FLEET, m));
    }
    let mut page = String::new();
    let title = match inputs {
        [one] => format!("kafka-workload report: run {}", one.result.run_id),
        many => format!("kafka-workload report: fleet of {}", many.len()),
    };
    write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    )?;
    writeln!(
        page,
        "<p class=\"meta\">topic {} &middot; kafka-workload {} &middot; {} input{}{}</p>",
        escape(&whole.topic),
        escape(&whole.version),
        inputs.len(),
        if inputs.len() == 1 { "" } else { "s" },
        if whole.mock_cluster {
            " &middot; librdkafka mock cluster"
        } else {
            ""
        }
    )?;
    verdict_section(&mut page, whole)?;
    summary_table(&mut page, &rows)?;
    plots(&mut page, inputs, merged)?;
    settings_table(&mut page, inputs)?;
    let mut text = Vec::new();
    super::summary::write_text(&mut text, whole)?;
    write!(
        page,
        "<h2>Text summary</h2>\n<pre>{}</pre>\n</body>\n</html>\n",
        escape(&String::from_utf8_lossy(&text))
    )?;
    Ok(page)
}

const FLEET: &str = "fleet (merged)";

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222;max-width:1100px}\
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em}\
table{border-collapse:collapse;font-size:.8em}td,th{border:1px solid #ccc;padding:.25em .6em;\
text-align:right}th{background:#f3f3f3}td.l,th.l{text-align:left}tr.fleet td{font-weight:bold}\
.meta{color:#666}.verdict{display:inline-block;padding:.3em .8em;border-radius:4px;\
font-weight:bold;color:#fff}.clean{background:#2e7d32}.bad{background:#c62828}\
.none{background:#777}figure{margin:1em 0}pre{background:#f7f7f7;padding:1em;overflow:auto}";

/// HTML-escapes text.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn verdict_section(page: &mut String, r: &RunResult) -> anyhow::Result<()> {
    page.push_str("<h2>Audit</h2>\n");
    let Some(c) = &r.consumer else {
        page.push_str("<p><span class=\"verdict none\">no audit</span> nothing was consumed</p>\n");
        return Ok(());
    };
    let a = &c.audit;
    let class = if a.verdict == "clean" { "clean" } else { "bad" };
    write!(
        page,
        "<p id=\"verdict\"><span class=\"verdict {class}\">{}</span> \
         {} distinct messages{}, {} lost, {} duplicates, {} out of order, {} foreign",
        escape(&a.verdict.to_uppercase()),
        a.distinct,
        a.expected
            .map_or(String::new(), |e| format!(" of {e} expected")),
        a.lost,
        a.duplicates,
        a.out_of_order,
        a.foreign
    )?;
    if a.not_delivered > 0 {
        write!(
            page,
            ", {} not delivered (the producer's word)",
            a.not_delivered
        )?;
    }
    if !a.transactions.is_empty() {
        write!(
            page,
            ", {} not committed, {} aborted records read ({})",
            a.not_committed,
            a.aborted_read,
            escape(&c.isolation)
        )?;
    }
    page.push_str("</p>\n");
    for (run, t) in &a.transactions {
        let ranges = |set: &crate::workload::audit::RangeSet| {
            set.ranges()
                .map(|(s, e)| format!("{s}-{}", e - 1))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(
            page,
            "<p class=\"meta\">run {}: committed {} &middot; aborted {}{}</p>",
            escape(run),
            escape(&clip(&ranges(&t.committed), 400)),
            escape(&clip(&ranges(&t.aborted), 400)),
            t.in_doubt_from.map_or(String::new(), |d| format!(
                " &middot; in doubt from {d} (aborted by the broker unless read)"
            ))
        )?;
    }
    Ok(())
}

fn clip(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((at, _)) => format!("{} ...", &s[..at]),
        None => s.to_string(),
    }
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn summary_table(page: &mut String, rows: &[(&str, &RunResult)]) -> anyhow::Result<()> {
    page.push_str(
        "<h2>Summary</h2>\n<table id=\"summary\">\n<tr><th class=\"l\">instance</th>\
         <th>sent</th><th>acked</th><th>failed</th><th>produce msgs/s</th><th>MB/s</th>\
         <th>ack p50 ms</th><th>ack p99 ms</th><th>ack p99.9 ms</th><th>ack max ms</th>\
         <th>consumed</th><th>consume msgs/s</th><th>e2e p50 ms</th><th>e2e p99 ms</th>\
         <th>e2e max ms</th><th>lost</th><th>dup</th><th class=\"l\">verdict</th></tr>\n",
    );
    for (label, r) in rows {
        let class = if *label == FLEET {
            " class=\"fleet\""
        } else {
            ""
        };
        write!(page, "<tr{class}><td class=\"l\">{}</td>", escape(label))?;
        match &r.producer {
            Some(p) => write!(
                page,
                "<td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.2}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td>",
                p.sent,
                p.acked,
                p.failed,
                p.throughput.msgs_per_sec,
                p.throughput.mb_per_sec,
                ms(p.ack_latency.p50_us),
                ms(p.ack_latency.p99_us),
                ms(p.ack_latency.p999_us),
                ms(p.ack_latency.max_us)
            )?,
            None => page.push_str(&"<td>-</td>".repeat(9)),
        }
        match &r.consumer {
            Some(c) => {
                let e2e = e2e_of(c);
                write!(
                    page,
                    "<td>{}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                     <td>{}</td><td class=\"l\">{}</td>",
                    c.records,
                    c.throughput.msgs_per_sec,
                    ms(e2e.p50_us),
                    ms(e2e.p99_us),
                    ms(e2e.max_us),
                    c.audit.lost,
                    c.audit.duplicates,
                    escape(&c.audit.verdict)
                )?
            }
            None => page.push_str(&"<td>-</td>".repeat(8)),
        }
        page.push_str("</tr>\n");
    }
    page.push_str("</table>\n");
    Ok(())
}

/// The end-to-end latency a consumer measured: of its own process's messages (monotonic
/// clock) when it has them, else of other processes' (wall clocks).
fn e2e_of(c: &super::result::ConsumerResult) -> &Latency {
    if c.e2e_latency.count > 0 {
        &c.e2e_latency
    } else {
        &c.e2e_latency_wall
    }
}

fn settings_table(page: &mut String, inputs: &[Input]) -> anyhow::Result<()> {
    let mut keys: Vec<&String> = inputs
        .iter()
        .flat_map(|i| i.result.settings.keys())
        .collect();
    keys.sort();
    keys.dedup();
    page.push_str("<h2>Settings</h2>\n");
    if keys.is_empty() {
        page.push_str("<p class=\"meta\">the results do not record their settings (v1)</p>\n");
        return Ok(());
    }
    page.push_str("<table id=\"settings\">\n<tr><th class=\"l\">setting</th>");
    for i in inputs {
        write!(page, "<th class=\"l\">{}</th>", escape(&i.label))?;
    }
    page.push_str("</tr>\n");
    for k in keys {
        write!(page, "<tr><td class=\"l\">{}</td>", escape(k))?;
        for i in inputs {
            let v = i.result.settings.get(k).map_or("", String::as_str);
            write!(page, "<td class=\"l\">{}</td>", escape(v))?;
        }
        page.push_str("</tr>\n");
    }
    page.push_str("</table>\n");
    Ok(())
}

/// A line on a chart.
struct Line {
    name: String,
    points: Vec<(f64, f64)>,
    color: RGBColor,
    bold: bool,
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const FLEET_COLOR: RGBColor = RGBColor(20, 20, 20);

fn instance_color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

/// A plot: what the lines are and how the axes read.
struct Chart<'a> {
    id: &'a str,
    title: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    log_y: bool,
    /// Formats x tick values (the spectrum's x is log10 of 1/(1-q)).
    x_fmt: &'a dyn Fn(&f64) -> String,
    /// Where the legend goes (clear of the lines).
    legend: SeriesLabelPosition,
    lines: Vec<Line>,
}

fn plot_error<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("cannot draw a plot: {e:?}")
}

/// Draws `chart` as an SVG document.
fn draw(chart: &Chart<'_>) -> anyhow::Result<String> {
    let pts = || chart.lines.iter().flat_map(|l| l.points.iter());
    let x_max = pts().map(|p| p.0).fold(0.0_f64, f64::max).max(1e-3);
    let x_min = pts().map(|p| p.0).fold(x_max, f64::min).min(x_max - 1e-3);
    let y_max = pts().map(|p| p.1).fold(0.0_f64, f64::max);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 380)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(chart.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(72);
        if chart.log_y {
            let y_min = pts()
                .map(|p| p.1)
                .filter(|&y| y > 0.0)
                .fold(y_max, f64::min)
                .max(1e-3);
            // Headroom above the lines for the legend.
            let y_hi = (y_max * 6.0).max(y_min * 10.0);
            let ctx = builder
                .build_cartesian_2d(x_min..x_max, (y_min / 1.5..y_hi).log_scale())
                .map_err(plot_error)?;
            finish(ctx, chart)?;
        } else {
            let ctx = builder
                .build_cartesian_2d(x_min..x_max, 0.0..(y_max * 1.45).max(1.0))
                .map_err(plot_error)?;
            finish(ctx, chart)?;
        }
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// Draws the mesh, the lines and the legend on a built chart (linear or log y).
fn finish<'a, Y>(
    mut ctx: ChartContext<
        'a,
        SVGBackend<'a>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, Y>,
    >,
    chart: &Chart<'_>,
) -> anyhow::Result<()>
where
    Y: plotters::coord::ranged1d::Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let y_fmt = |y: &f64| {
        if *y >= 100.0 || *y == 0.0 {
            format!("{y:.0}")
        } else if *y >= 1.0 {
            format!("{y:.1}")
        } else {
            format!("{y:.3}")
        }
    };
    ctx.configure_mesh()
        .x_desc(chart.x_desc)
        .y_desc(chart.y_desc)
        .x_label_formatter(chart.x_fmt)
        .y_label_formatter(&y_fmt)
        .axis_desc_style(("sans-serif", 14))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(plot_error)?;
    for line in &chart.lines {
        let width = if line.bold { 3 } else { 1 };
        let style = line.color.stroke_width(width);
        let color = line.color;
        let points = line.points.iter().copied().filter(|p| p.1.is_finite());
        let points: Vec<(f64, f64)> = if chart.log_y {
            points.filter(|p| p.1 > 0.0).collect()
        } else {
            points.collect()
        };
        ctx.draw_series(LineSeries::new(points, style))
            .map_err(plot_error)?
            .label(line.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(width))
            });
    }
    ctx.configure_series_labels()
        .position(chart.legend.clone())
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

/// The earliest interval start of any series, µs since the epoch: time zero of the plots.
fn time_zero<'a>(series: impl Iterator<Item = &'a Series>) -> Option<u64> {
    series
        .filter_map(|s| s.points.first().map(|p| p.start_unix_us))
        .min()
}

fn plots(page: &mut String, inputs: &[Input], merged: Option<&RunResult>) -> anyhow::Result<()> {
    page.push_str("<h2>Plots</h2>\n");
    let all_series = || {
        inputs.iter().flat_map(|i| {
            [
                i.result.producer.as_ref().and_then(|p| p.series.as_ref()),
                i.result.consumer.as_ref().and_then(|c| c.series.as_ref()),
            ]
            .into_iter()
            .flatten()
        })
    };
    let zero = time_zero(all_series());
    // A point is drawn at its interval's middle: the first and last intervals are partial.
    let interval = all_series().map(|s| s.interval_us).max().unwrap_or(0);
    let secs = |t: u64| (t + interval / 2).saturating_sub(zero.unwrap_or(0)) as f64 / 1e6;
    let span = all_series()
        .filter_map(|s| s.points.last().map(|p| secs(p.start_unix_us)))
        .fold(0.0_f64, f64::max);
    let decimals = if span < 10.0 { 1 } else { 0 };
    let plain = move |x: &f64| format!("{x:.decimals$}");
    // Several inputs: one thin line per instance and a bold one for the fleet.
    let fleet = merged.filter(|_| inputs.len() > 1);
    let members = || {
        inputs
            .iter()
            .enumerate()
            .map(|(i, input)| (input.label.clone(), &input.result, instance_color(i), false))
            .chain(fleet.map(|m| (FLEET.to_string(), m, FLEET_COLOR, true)))
    };
    let whole = fleet.unwrap_or(&inputs[0].result);
    let whole_name = if fleet.is_some() { FLEET } else { "run" };

    let mut charts = Vec::new();
    let rate_lines = |producer: bool| -> Vec<Line> {
        members()
            .filter_map(|(name, r, color, bold)| {
                let s = if producer {
                    r.producer.as_ref().and_then(|p| p.series.as_ref())
                } else {
                    r.consumer.as_ref().and_then(|c| c.series.as_ref())
                }?;
                let per = s.interval_secs();
                Some(Line {
                    name,
                    points: s
                        .points
                        .iter()
                        .map(|p| {
                            let n = if producer { p.acked } else { p.consumed };
                            (secs(p.start_unix_us), n as f64 / per)
                        })
                        .collect(),
                    color,
                    bold,
                })
            })
            .collect()
    };
    let produced = rate_lines(true);
    if !produced.is_empty() {
        charts.push(Chart {
            id: "plot-produce-throughput",
            title: "Produce throughput (acknowledged messages)",
            x_desc: "time since start (s)",
            y_desc: "msgs/s",
            log_y: false,
            x_fmt: &plain,
            legend: SeriesLabelPosition::UpperRight,
            lines: produced,
        });
    }
    let consumed = rate_lines(false);
    if !consumed.is_empty() {
        charts.push(Chart {
            id: "plot-consume-throughput",
            title: "Consume throughput (records)",
            x_desc: "time since start (s)",
            y_desc: "records/s",
            log_y: false,
            x_fmt: &plain,
            legend: SeriesLabelPosition::UpperRight,
            lines: consumed,
        });
    }
    // Percentiles over time of the whole (fleet or run), with each instance's p99 beside them.
    let over_time = |ack: bool| -> Vec<Line> {
        fn series_of(r: &RunResult, ack: bool) -> Option<&Series> {
            if ack {
                r.producer.as_ref().and_then(|p| p.series.as_ref())
            } else {
                r.consumer.as_ref().and_then(|c| c.series.as_ref())
            }
        }
        fn point_latency(p: &super::result::Point, ack: bool) -> Option<&Latency> {
            if ack {
                p.ack.as_ref()
            } else {
                p.e2e.as_ref()
            }
        }
        let lat = |p| point_latency(p, ack);
        let mut lines = Vec::new();
        if let Some(s) = series_of(whole, ack) {
            type Pick = fn(&Latency) -> u64;
            let picks: [(&str, Pick, RGBColor); 3] = [
                ("p50", |l| l.p50_us, RGBColor(44, 160, 44)),
                ("p99", |l| l.p99_us, RGBColor(255, 127, 14)),
                ("max", |l| l.max_us, RGBColor(214, 39, 40)),
            ];
            for (label, pick, color) in picks {
                lines.push(Line {
                    name: format!("{whole_name} {label}"),
                    points: s
                        .points
                        .iter()
                        .filter_map(|p| {
                            lat(p).map(|l| (secs(p.start_unix_us), pick(l) as f64 / 1000.0))
                        })
                        .collect(),
                    color,
                    bold: true,
                });
            }
        }
        if fleet.is_some() {
            for (i, input) in inputs.iter().enumerate() {
                if let Some(s) = series_of(&input.result, ack) {
                    lines.push(Line {
                        name: format!("{} p99", input.label),
                        points: s
                            .points
                            .iter()
                            .filter_map(|p| {
                                lat(p).map(|l| (secs(p.start_unix_us), l.p99_us as f64 / 1000.0))
                            })
                            .collect(),
                        color: instance_color(i),
                        bold: false,
                    });
                }
            }
        }
        lines.retain(|l| !l.points.is_empty());
        lines
    };
    for (ack, id, title) in [
        (
            true,
            "plot-ack-latency",
            "Ack latency over time (coordinated omission corrected)",
        ),
        (false, "plot-e2e-latency", "End-to-end latency over time"),
    ] {
        let lines = over_time(ack);
        if !lines.is_empty() {
            charts.push(Chart {
                id,
                title,
                x_desc: "time since start (s)",
                y_desc: "latency (ms, log scale)",
                log_y: true,
                x_fmt: &plain,
                legend: SeriesLabelPosition::UpperRight,
                lines,
            });
        }
    }
    // The percentile spectrum: x is log10(1 / (1 - q)), so 90% is 1, 99% is 2, 99.9% is 3.
    let spectrum_fmt = |x: &f64| {
        // Ticks at whole nines only (0%, 90%, 99%, ...): the ones between read as noise.
        if (x - x.round()).abs() > 1e-6 {
            return String::new();
        }
        let x = x.round();
        let q = 100.0 * (1.0 - 10f64.powf(-x));
        let digits = (x.ceil() as usize).saturating_sub(2).min(4);
        format!("{q:.digits$}%")
    };
    let spectrum = |ack: bool| -> anyhow::Result<Vec<Line>> {
        let mut lines = Vec::new();
        for (name, r, color, bold) in members() {
            let l = if ack {
                r.producer.as_ref().map(|p| &p.ack_latency)
            } else {
                r.consumer.as_ref().map(e2e_of)
            };
            let Some(l) = l.filter(|l| l.count > 0) else {
                continue;
            };
            let h = l.histogram().context("reading a latency histogram")?;
            let top = (h.len() as f64).log10().clamp(1.0, 6.0);
            let points = (0..=(top * 20.0) as usize)
                .map(|k| {
                    let x = k as f64 / 20.0;
                    let q = 1.0 - 10f64.powf(-x);
                    (x, h.value_at_quantile(q) as f64 / 1000.0)
                })
                .chain([(top, h.max() as f64 / 1000.0)])
                .collect();
            lines.push(Line {
                name,
                points,
                color,
                bold,
            });
        }
        Ok(lines)
    };
    for (ack, id, title) in [
        (
            true,
            "plot-ack-spectrum",
            "Ack latency distribution (percentile spectrum)",
        ),
        (
            false,
            "plot-e2e-spectrum",
            "End-to-end latency distribution (percentile spectrum)",
        ),
    ] {
        let lines = spectrum(ack)?;
        if !lines.is_empty() {
            charts.push(Chart {
                id,
                title,
                x_desc: "percentile",
                y_desc: "latency (ms, log scale)",
                log_y: true,
                x_fmt: &spectrum_fmt,
                legend: SeriesLabelPosition::LowerRight,
                lines,
            });
        }
    }
    if charts.is_empty() {
        page.push_str("<p class=\"meta\">nothing to plot: no series and no latencies</p>\n");
    }
    if zero.is_none() {
        page.push_str(
            "<p class=\"meta\">the results hold no time series (v1 results): only the \
             distributions are plotted</p>\n",
        );
    }
    for chart in &charts {
        let svg = draw(chart)?;
        // The SVG document's own XML declaration does not belong inside HTML.
        let svg = svg.trim_start_matches(|c| c != '<');
        let svg = match svg.strip_prefix("<?xml") {
            Some(rest) => rest.split_once("?>").map_or(rest, |(_, r)| r),
            None => svg,
        };
        writeln!(
            page,
            "<figure id=\"{}\" class=\"plot\">{}</figure>",
            chart.id,
            svg.trim()
        )?;
    }
    Ok(())
}

/// Reads result files and writes their report: with several, the fleet merged too.
pub fn report_files(files: &[std::path::PathBuf], output: &Path) -> anyhow::Result<()> {
    let mut inputs = Vec::new();
    for f in files {
        let result = super::merge::read_result(f)?;
        let label = f.file_name().map_or_else(
            || f.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        inputs.push(Input { label, result });
    }
    let merged = if inputs.len() > 1 {
        let results: Vec<RunResult> = inputs.iter().map(|i| i.result.clone()).collect();
        Some(super::merge::merge(&results)?)
    } else {
        None
    };
    write(output, &inputs, merged.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::result::{consumer_result, producer_result};
    use crate::report::stats::{record_latency, ConsumerTally, ProducerTally, SeriesTally, Window};
    use std::time::{Duration, Instant};

    /// A round trip of `n` messages over `secs` seconds, with a series.
    fn round_trip(run: &str, n: u64, secs: u64) -> RunResult {
        let mut p = ProducerTally {
            series: SeriesTally::new(Duration::from_secs(1), 1_700_000_000_000_000),
            ..Default::default()
        };
        let mut c = ConsumerTally {
            series: p.series.clone(),
            ..Default::default()
        };
        for i in 0..n {
            let at = i * secs * 1_000_000 / n;
            p.acked += 1;
            p.bytes += 100;
            record_latency(&mut p.ack_latency, 1000 + i);
            p.series.sent(at);
            p.series.acked(at + 1000, 100, 1000 + i);
            c.records += 1;
            c.bytes += 100;
            c.audit.record(run, 0, i);
            record_latency(&mut c.e2e_monotonic, 2000 + i);
            c.series.consumed(at + 2000, 100, Some(2000 + i));
        }
        let now = Instant::now();
        let w = Window {
            start: Some(now - Duration::from_secs(secs)),
            end: Some(now),
        };
        c.window = w;
        RunResult {
            schema: crate::report::result::SCHEMA.into(),
            run_id: run.into(),
            topic: "t<1>".into(),
            producer: Some(producer_result(n, &p, &w, Default::default())),
            consumer: Some(consumer_result(&c, Some(n), "g", Default::default())),
            settings: [("acks".to_string(), "all".to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_fleet_page_has_every_plot_a_row_per_instance_and_nothing_to_fetch() {
        let inputs: Vec<Input> = ["a", "b", "c"]
            .iter()
            .map(|r| Input {
                label: format!("{r}.json"),
                result: round_trip(r, 3000, 3),
            })
            .collect();
        let results: Vec<RunResult> = inputs.iter().map(|i| i.result.clone()).collect();
        let merged = crate::report::merge::merge(&results).unwrap();
        let html = render(&inputs, Some(&merged)).unwrap();
        for id in [
            "plot-produce-throughput",
            "plot-consume-throughput",
            "plot-ack-latency",
            "plot-e2e-latency",
            "plot-ack-spectrum",
            "plot-e2e-spectrum",
        ] {
            assert!(
                html.contains(&format!("<figure id=\"{id}\"")),
                "{id} missing"
            );
        }
        assert_eq!(html.matches("<svg").count(), 6);
        assert!(!html.contains("<?xml"));
        assert!(html.contains("time since start (s)") && html.contains("percentile"));
        for label in ["a.json", "b.json", "c.json", "fleet (merged)"] {
            assert!(html.contains(&format!(">{label}<")), "{label} missing");
        }
        assert!(html.contains("CLEAN"));
        // The topic's name is escaped; nothing is fetched or run.
        assert!(html.contains("t&lt;1&gt;") && !html.contains("t<1>"));
        for needle in ["<script", "<link", "src=", "<img"] {
            assert!(!html.contains(needle), "{needle}");
        }
        // The fleet's row: 9000 acknowledged.
        assert!(html.contains("<td>9000</td>"));
    }

    #[test]
    fn a_result_without_series_still_gets_its_distributions() {
        let mut r = round_trip("a", 100, 1);
        r.producer.as_mut().unwrap().series = None;
        r.consumer.as_mut().unwrap().series = None;
        r.settings.clear();
        let html = render(
            &[Input {
                label: "old.json".into(),
                result: r,
            }],
            None,
        )
        .unwrap();
        assert!(html.contains("plot-ack-spectrum") && !html.contains("plot-ack-latency"));
        assert!(html.contains("hold no time series"));
        assert!(html.contains("do not record their settings"));
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }
}
