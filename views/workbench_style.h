// Small shared pieces of the workbench window: where its settings live and its dark palette.
#pragma once

#include <QPalette>
#include <QSettings>

namespace moeatlas::views {

// QSettings of moeatlas-gui: INI format, user scope, organisation "MoE Atlas", application
// "moeatlas-gui" (tests redirect the user scope with QSettings::setPath).
QSettings workbenchSettings();

// A neutral dark palette (View > Dark palette); the light one is the style's standard palette.
QPalette darkPalette();

} // namespace moeatlas::views
