#include "charts/chart_image.h"

#include <QCoreApplication>
#include <QFileInfo>
#include <QImage>
#include <QLayout>
#include <QPainter>
#include <QPixmap>
#include <QSvgGenerator>
#include <QWidget>

namespace moeatlas::views {

bool saveWidgetImage(QWidget* widget, const QString& path)
{
    if (!widget || path.isEmpty())
        return false;
    // A chart rebuilt just before (new domain, new table) lays its legend out from posted events;
    // deliver them, or the image would show the old or an empty legend.
    QCoreApplication::sendPostedEvents();
    if (widget->layout())
        widget->layout()->activate();
    if (widget->width() < 50 || widget->height() < 50)
        widget->resize(widget->sizeHint().expandedTo(QSize(640, 480)));
    if (QFileInfo(path).suffix().compare(QLatin1String("svg"), Qt::CaseInsensitive) == 0) {
        {
            QSvgGenerator svg; // writes and closes the file when it goes out of scope
            svg.setFileName(path);
            svg.setSize(widget->size());
            svg.setViewBox(widget->rect());
            svg.setTitle(widget->windowTitle());
            QPainter painter;
            if (!painter.begin(&svg))
                return false;
            widget->render(&painter);
            if (!painter.end())
                return false;
        }
        return QFileInfo(path).size() > 0;
    }
    return widget->grab().save(path);
}

} // namespace moeatlas::views
