// The workbench's job strip: the running job's name, stage, progress bar, ETA and a Cancel
// button, above a log of finished jobs (ok, failed with the error, or cancelled).
#pragma once

#include <QString>
#include <QStringList>
#include <QWidget>

class QLabel;
class QListWidget;
class QProgressBar;
class QPushButton;

namespace moeatlas::views {

class JobRunner;

class JobsPanel : public QWidget {
    Q_OBJECT
public:
    explicit JobsPanel(JobRunner* runner, QWidget* parent = nullptr);

    JobRunner* runner() const { return m_runner; }
    // For tests and the main window's status bar.
    QProgressBar* progressBar() const { return m_bar; }
    QPushButton* cancelButton() const { return m_cancel; }
    QString stageText() const;
    QString etaText() const;
    // One line per finished job, oldest first: "✓ name: message", "✗ name: error", "⊘ name: cancelled".
    QStringList logLines() const;

    // "3 min 20 s", "45 s", "" for unknown (negative).
    static QString formatEta(double seconds);

private:
    void onStarted(int jobId, const QString& name);
    void onProgress(const QString& stage, qint64 done, qint64 total, double eta);
    void onFinished(bool ok, const QString& message);

    JobRunner* m_runner;
    QLabel* m_name;
    QLabel* m_stage;
    QLabel* m_eta;
    QProgressBar* m_bar;
    QPushButton* m_cancel;
    QListWidget* m_log;
    QString m_currentName;
    bool m_cancelled = false;
};

} // namespace moeatlas::views
