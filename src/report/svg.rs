//! Horizontal bar charts as plain SVG: no plotting dependency, byte-stable output.

use std::fmt::Write;

const LABEL_WIDTH: f64 = 230.0;
const BAR_SPACE: f64 = 320.0;
const ROW_HEIGHT: f64 = 24.0;
const TITLE_HEIGHT: f64 = 30.0;

/// One bar per `(label, value)`, scaled to the largest value.
pub fn bar_chart(title: &str, bars: &[(String, f64)]) -> String {
    let max = bars.iter().map(|(_, v)| *v).fold(0.0_f64, f64::max).max(f64::MIN_POSITIVE);
    let width = LABEL_WIDTH + BAR_SPACE + 80.0;
    let height = TITLE_HEIGHT + ROW_HEIGHT * bars.len() as f64 + 10.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">{}</text>\n",
        escape(title)
    );
    for (i, (label, value)) in bars.iter().enumerate() {
        let y = TITLE_HEIGHT + ROW_HEIGHT * i as f64;
        let length = BAR_SPACE * value / max;
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{LABEL_WIDTH}\" y=\"{:.1}\" width=\"{length:.1}\" height=\"{:.1}\" fill=\"#4878a8\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{value:.2}</text>",
            LABEL_WIDTH - 8.0,
            y + 15.0,
            escape(label),
            y + 3.0,
            ROW_HEIGHT - 6.0,
            LABEL_WIDTH + length + 5.0,
            y + 15.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
