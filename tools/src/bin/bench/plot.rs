//! bench's plot, `benchmarks/frames.svg`: frames/s per scenario and server, and
//! server memory per idle connection.

use std::path::Path;

use crate::report::{grouped, Results};
use crate::scenarios::{Scenario, SERVERS};

/// Frames/s per scenario per server (log scale), and idle memory per connection.
pub fn draw_plot(path: &Path, results: &Results) -> anyhow::Result<()> {
    use plotters::prelude::*;

    let colors = [
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0xff, 0x7f, 0x0e),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0x7f, 0x7f, 0x7f),
    ];
    let throughput: Vec<&Scenario> = results
        .scenarios
        .iter()
        .filter(|s| s.mode != "idle")
        .collect();
    let idle = results.scenarios.iter().find(|s| s.mode == "idle");
    let root = SVGBackend::new(path, (1000, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(470);

    let values: Vec<f64> = throughput
        .iter()
        .flat_map(|s| {
            SERVERS
                .iter()
                .filter_map(|sv| results.median(s.key, sv, "frames_per_sec"))
        })
        .filter(|v| *v > 0.0)
        .collect();
    if !values.is_empty() {
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min) / 2.0;
        // Headroom above the tallest bar for the legend.
        let hi = values.iter().copied().fold(0.0, f64::max) * 8.0;
        let n = throughput.len();
        let mut chart = ChartBuilder::on(&top)
            .caption(
                format!("frames/s, median of {} (log scale)", results.plan.reps),
                ("sans-serif", 20),
            )
            .margin(10)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..n as f64, (lo..hi).log_scale())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE)
            .x_labels(0)
            .y_desc("frames/s")
            .y_label_formatter(&|v| grouped(*v))
            .draw()?;
        let width = 0.8 / SERVERS.len() as f64;
        for (k, server) in SERVERS.iter().enumerate() {
            let color = colors[k];
            let bars = throughput.iter().enumerate().filter_map(|(i, s)| {
                let v = results.median(s.key, server, "frames_per_sec")?;
                let x0 = i as f64 + 0.1 + k as f64 * width;
                Some(Rectangle::new(
                    [(x0, lo), (x0 + width * 0.9, v)],
                    color.filled(),
                ))
            });
            chart
                .draw_series(bars)?
                .label(*server)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        for (i, s) in throughput.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(i as f64 + 0.5, lo));
            let style = TextStyle::from(("sans-serif", 13).into_font()).pos(
                plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Center,
                    plotters::style::text_anchor::VPos::Top,
                ),
            );
            // Two lines: the title's part before and after the first comma.
            let (first, second) = s.title.split_once(", ").unwrap_or((s.title, ""));
            top.draw(&Text::new(first.to_owned(), (x, y + 8), style.clone()))?;
            top.draw(&Text::new(second.to_owned(), (x, y + 24), style))?;
        }
    }

    if let Some(s) = idle {
        let values: Vec<(usize, f64)> = SERVERS
            .iter()
            .enumerate()
            .filter_map(|(k, sv)| {
                Some((k, results.median(s.key, sv, "rss_per_conn_bytes")? / 1024.0))
            })
            .collect();
        let hi = values.iter().map(|(_, v)| *v).fold(4.0, f64::max) * 1.2;
        let mut chart = ChartBuilder::on(&bottom)
            .caption(
                format!(
                    "server RSS per idle connection, KiB ({} connections)",
                    s.clients
                ),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(10)
            .y_label_area_size(120)
            .build_cartesian_2d(0.0..hi, 0f64..SERVERS.len() as f64)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(WHITE)
            .y_labels(0)
            .x_desc("KiB per connection")
            .draw()?;
        chart.draw_series(values.iter().map(|&(k, v)| {
            let y0 = (SERVERS.len() - 1 - k) as f64 + 0.15;
            Rectangle::new([(0.0, y0), (v, y0 + 0.7)], colors[k].filled())
        }))?;
        // The 4 KiB target.
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(4.0, 0.0), (4.0, SERVERS.len() as f64)],
            BLACK.stroke_width(1),
        )))?;
        for (k, server) in SERVERS.iter().enumerate() {
            let y = (SERVERS.len() - 1 - k) as f64 + 0.5;
            let (px, py) = chart.backend_coord(&(0.0, y));
            let style = TextStyle::from(("sans-serif", 13).into_font()).pos(
                plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Right,
                    plotters::style::text_anchor::VPos::Center,
                ),
            );
            // Backend coordinates are the whole picture's: draw on the root area.
            root.draw(&Text::new((*server).to_owned(), (px - 8, py), style))?;
        }
    }
    root.present()?;
    Ok(())
}
