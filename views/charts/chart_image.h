// Saving a chart widget as an image: PNG (or any raster format Qt writes) by grabbing the widget,
// SVG by rendering it into a QSvgGenerator (vector text and lines, for papers).
#pragma once

#include <QString>

class QWidget;

namespace moeatlas::views {

// The format follows the suffix (.svg, else a raster format such as .png). A widget that was never
// laid out is given its size hint first. False when the file cannot be written.
bool saveWidgetImage(QWidget* widget, const QString& path);

} // namespace moeatlas::views
