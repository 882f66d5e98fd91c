// The Prefetch tab (issue 17): how well the next layers' experts can be predicted and what that buys.
// Left: the layer x lookahead heatmap of the stored hit rates (/prefetch_hit_rates) per predictor, domain,
// split and metric, or, without a table, what to run (`moeatlas prefetch ATLAS` or the button, a
// background job with progress and Cancel). Right: the what-if panel (offload simulator) and the quality
// cost of speculative execution (/evaluation variants "<base>+spec:<predictor>") next to its speed gain.
#pragma once

#include "charts/prefetch_data.h"

#include <QString>
#include <QWidget>

#include <memory>

class QComboBox;
class QLabel;
class QProgressBar;
class QPushButton;
class QTableWidget;

namespace moeatlas::views {

struct AtlasSnapshot;
class JobRunner;
class PrefetchHeatmap;
class PrefetchWhatIf;

class PrefetchView : public QWidget {
    Q_OBJECT
public:
    explicit PrefetchView(QWidget* parent = nullptr);

    // A new atlas (null: nothing open). Keeps the predictor, domain, split and metric when it has them.
    void setSnapshot(std::shared_ptr<const AtlasSnapshot> snapshot);
    // Where Compute hit rates runs its job (the window's runner; its Jobs panel shows it too).
    void setJobRunner(JobRunner* runner);

    bool hasTable() const;
    QString noteText() const; // the empty state's text, or an error of the table
    // Starts `moeatlas prefetch ATLAS` (every predictor, the default lookaheads) as a background job;
    // returns its id (0 when nothing is open, no runner, or one is running already).
    int computeHitRates();
    bool isComputing() const { return m_job != 0; }

    QComboBox* predictorBox() const { return m_predictor; }
    QComboBox* domainBox() const { return m_domain; }
    QComboBox* splitBox() const { return m_split; }
    QComboBox* metricBox() const { return m_metric; }
    PrefetchHeatmap* heatmap() const { return m_heatmap; }
    PrefetchWhatIf* whatIf() const { return m_whatIf; }
    QPushButton* computeButton() const { return m_compute; }
    QPushButton* cancelButton() const { return m_cancel; }
    // One row per speculative variant: variant, one column per domain (loss change), pooled, TPOT gain.
    QTableWidget* qualityTable() const { return m_quality; }
    QString qualityNote() const;
    const std::vector<SpeculativeQuality>& speculative() const { return m_spec; }

Q_SIGNALS:
    // The compute job stored the table in `atlas`: reopen it to show the table.
    void hitTableStored(const QString& atlas);
    void message(const QString& text);

private:
    void rebuildSelectors();
    void rebuildHeatmap();
    void rebuildQuality();
    void updateSpeed();
    void showState();

    std::shared_ptr<const AtlasSnapshot> m_snapshot;
    std::vector<SpeculativeQuality> m_spec;
    JobRunner* m_runner = nullptr;
    int m_job = 0; // the compute job (0: none)
    bool m_jobRunning = false; // it has started
    QString m_jobNote;

    QComboBox* m_predictor;
    QComboBox* m_domain;
    QComboBox* m_split;
    QComboBox* m_metric;
    QLabel* m_note;
    QPushButton* m_compute;
    QPushButton* m_cancel;
    QProgressBar* m_progress;
    PrefetchHeatmap* m_heatmap;
    PrefetchWhatIf* m_whatIf;
    QLabel* m_qualityNote;
    QTableWidget* m_quality;
};

} // namespace moeatlas::views
