// The Capture dialog: records a new atlas exactly as `moeatlas capture CKPT --domain NAME=PATH ...
// --seq-len N [--max-samples N] [--expert-norms] [--force] -o ATLAS` does, then scores it as
// `moeatlas score ATLAS` does, both as JobRunner jobs (the score job starts once the capture has
// succeeded).
#pragma once

#include <QDialog>
#include <QList>
#include <QPair>
#include <QString>

class QCheckBox;
class QDialogButtonBox;
class QLabel;
class QLineEdit;
class QProgressBar;
class QPushButton;
class QSpinBox;
class QTableWidget;

namespace moeatlas::views {

class JobRunner;

class CaptureDialog : public QDialog {
    Q_OBJECT
public:
    // The dialog does not own the runner; jobs already queued on it run first.
    explicit CaptureDialog(JobRunner* runner, QWidget* parent = nullptr);

    // The form, for tests and callers. Domains are (NAME, PATH) rows; PATH is a text file, a
    // directory of .txt files or a JSONL file, as `--domain NAME=PATH` takes.
    void setCheckpoint(const QString& dir);
    void setDomains(const QList<QPair<QString, QString>>& domains);
    void setSeqLen(int tokens);
    void setMaxSamples(int perDomain); // 0 = all
    void setExpertNorms(bool record);
    void setOutput(const QString& atlas);
    void setForce(bool force);
    QList<QPair<QString, QString>> domains() const;
    QString output() const;
    QTableWidget* domainsTable() const { return m_domains; }
    // True from start() until the capture (or the score that follows it) has ended.
    bool isRunning() const { return m_captureId != 0 || m_scoreId != 0; }
    // The last validation error, stage or result line shown under the form.
    QString statusText() const;

public Q_SLOTS:
    // Validates the form and queues the capture; false (with the reason in the status line) when
    // a field is invalid or a capture of this dialog is still running. Nothing is started then.
    bool start();
    // Stops the running capture or score of this dialog (it ends with cancelled()).
    void cancel();

Q_SIGNALS:
    // The atlas was captured and scored; `path` is the output as entered.
    void atlasReady(const QString& path);
    // The capture or the score failed (the error, as the CLI words it) or was cancelled.
    void failed(const QString& message);
    void cancelled();

protected:
    void reject() override; // Close/Escape cancels a running job first

private:
    void addDomainRow(const QString& name, const QString& path);
    void addDomainFiles();
    void addDomainDirectory();
    void browseCheckpoint();
    void browseOutput();
    QString validate() const; // empty when the form can start
    void onFinished(bool ok, const QString& message);
    void setRunning(bool running);

    JobRunner* m_runner;
    int m_captureId = 0; // the capture of this dialog, while it runs
    int m_scoreId = 0; // the score that follows it, while it runs
    int m_runningId = 0; // the runner's current job, to ignore other jobs' signals
    bool m_cancelled = false; // cancel() was called for the current run
    bool m_jobCancelled = false; // the runner reported cancelled() for the job that is ending
    bool m_closeWhenDone = false; // Close was pressed while running
    QString m_atlas; // output of the current run

    QLineEdit* m_checkpoint;
    QPushButton* m_browseCheckpoint;
    QTableWidget* m_domains;
    QPushButton* m_addRow;
    QPushButton* m_addFiles;
    QPushButton* m_addDirectory;
    QPushButton* m_removeRows;
    QSpinBox* m_seqLen;
    QSpinBox* m_maxSamples;
    QCheckBox* m_expertNorms;
    QCheckBox* m_chatTemplate;
    QLineEdit* m_output;
    QPushButton* m_browseOutput;
    QCheckBox* m_force;
    QProgressBar* m_bar;
    QLabel* m_status;
    QDialogButtonBox* m_buttons;
    QPushButton* m_startButton;
};

} // namespace moeatlas::views
