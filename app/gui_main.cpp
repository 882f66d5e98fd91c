// moeatlas-gui [atlas]: the workbench (views/MainWindow); opens the atlas given on the command line.
#include "main_window.h"

#include "runtime/runtime_policy.h"

#include <QApplication>
#include <QCommandLineParser>

int main(int argc, char** argv)
{
    // Threads and allocator settings are the program's to choose (runtime/runtime_policy.h); jobs
    // scope their own.
    moeatlas::applyRuntimePolicy({});
    QApplication app(argc, argv);
    QApplication::setOrganizationName(QStringLiteral("MoE Atlas"));
    QApplication::setApplicationName(QStringLiteral("moeatlas-gui"));
    QApplication::setApplicationVersion(QStringLiteral(MOEATLAS_VERSION));

    QCommandLineParser parser;
    parser.setApplicationDescription(QStringLiteral("MoE Atlas workbench: expert heatmaps, budgets and plans"));
    parser.addHelpOption();
    parser.addVersionOption();
    parser.addPositionalArgument(QStringLiteral("atlas"), QStringLiteral("Atlas file to open (.atlas.h5)"));
    parser.process(app);

    moeatlas::views::MainWindow window;
    window.show();
    if (!parser.positionalArguments().isEmpty())
        window.openAtlas(parser.positionalArguments().constFirst());
    return QApplication::exec();
}
