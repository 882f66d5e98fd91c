// The Export dialog: writes the pruned checkpoint of a plan, exactly as
// `moeatlas export SOURCE --plan PLAN -o OUT [--force] [--max-shard-mib N] [--routing RULE]` does,
// through a JobRunner.
#pragma once

#include "plan/plan.h"

#include <QDialog>
#include <QString>

class QCheckBox;
class QDialogButtonBox;
class QLabel;
class QLineEdit;
class QProgressBar;
class QPushButton;
class QSpinBox;

namespace moeatlas::views {

class JobRunner;

class ExportDialog : public QDialog {
    Q_OBJECT
public:
    // planPath is recorded in the model card (as the CLI's --plan); empty for an unsaved plan.
    // The dialog does not own the runner; jobs already queued on it run first.
    ExportDialog(
        Plan plan, const QString& planPath, const QString& sourceDir, JobRunner* runner, QWidget* parent = nullptr);

    // The form, for the main window's defaults and for tests.
    void setSourceDir(const QString& dir);
    void setOutputDir(const QString& dir);
    void setForce(bool force);
    void setMaxShardMiB(int mib);
    void setAtlasPath(const QString& atlas); // --atlas: recorded in the model card
    void setRouting(const QString& rule); // --routing: "model", "top-k:K", "probmoe:KMIN:KMAX", ...
    QString outputDir() const;
    bool isExporting() const { return m_jobId != 0; }
    // The last error or result line shown under the form.
    QString statusText() const;

public Q_SLOTS:
    // Validates the form and queues the export; false (with the reason in the status line) when
    // the output directory is empty or an export of this dialog is still running.
    bool startExport();

Q_SIGNALS:
    // The export ended: ok with the output directory, or the error / "cancelled".
    void exportFinished(bool ok, const QString& messageOrDir);

protected:
    void reject() override; // Close/Escape cancels a running export first

private:
    void browse();
    void onFinished(bool ok, const QString& message);

    Plan m_plan;
    QString m_planPath;
    QString m_atlasPath;
    JobRunner* m_runner;
    int m_jobId = 0; // the export of this dialog, while it runs
    QString m_exportingTo; // its output directory, as given when it started
    int m_runningId = 0; // the runner's current job, to ignore other jobs' signals
    bool m_closeWhenDone = false; // Close was pressed while exporting

    QLabel* m_summary;
    QLineEdit* m_source;
    QLineEdit* m_output;
    QPushButton* m_browse;
    QCheckBox* m_force;
    QSpinBox* m_shard;
    QLineEdit* m_routing;
    QProgressBar* m_bar;
    QLabel* m_status;
    QDialogButtonBox* m_buttons;
    QPushButton* m_exportButton;
};

} // namespace moeatlas::views
